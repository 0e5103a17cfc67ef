"""Fixtures of the cluster with real nodes (devcluster.fixtures)."""

from devcluster.fixtures import dev_cluster, kube, node_namespace

__all__ = ["dev_cluster", "kube", "node_namespace"]
