"""The cluster with real nodes for the chart's operator tests (devcluster.fixtures); the
other chart tests keep the session control plane's `kube`."""

from devcluster.fixtures import dev_cluster, node_namespace

__all__ = ["dev_cluster", "node_namespace"]
