"""A local Kubernetes cluster for development, demos, benchmarks and the tests.

Real components on one machine: a control plane built from its Go modules, the Debian
Pushgateway and Prometheus, a network lab of Linux routers in network namespaces, and a pod
runner. `python -m devcluster` starts and stops it by hand; `make demo` runs the demo.
Nothing here imports from tests/; the tests import from here.
"""
