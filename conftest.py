"""Root conftest: registers the fixture plugins of the real test environment.

Each plugin module owns one real component of the local cluster (devcluster/).
"""

pytest_plugins = [
    "tests.fixtures.lab",
    "tests.fixtures.cluster",
]
