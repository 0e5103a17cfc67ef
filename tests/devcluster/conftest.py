"""Fixtures of the cluster with real nodes (tests/fixtures/nodes.py). Its admin `kube` is
imported only by the modules that test the nodes (test_nodes.py, test_operator_on_nodes.py):
the other tests here (control plane, pod runner, Prometheus stack) keep the session control
plane's `kube`."""

from tests.fixtures.nodes import dev_cluster, node_namespace

__all__ = ["dev_cluster", "node_namespace"]
