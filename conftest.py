"""Root conftest: registers the fixture plugins of the real test environment.

Each plugin module owns one real component; see tests/realenv/.
"""

pytest_plugins = [
    "tests.realenv.lab_fixtures",
    "tests.realenv.cluster_fixtures",
]
