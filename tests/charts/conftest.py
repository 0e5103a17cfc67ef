"""The cluster with real nodes for the chart's operator tests (tests/fixtures/nodes.py); the
other chart tests keep the session control plane's `kube`."""

from tests.fixtures.nodes import dev_cluster, node_namespace

__all__ = ["dev_cluster", "node_namespace"]
