"""pytest fixtures for the cluster with real nodes (registered by tests/devcluster/conftest.py).

`dev_cluster` (session): a DevCluster with two nodes and the probe image in its registry.
`node_namespace`: a fresh restricted namespace with the registry's pull Secret. `kube`:
admin KubeRest on that cluster.
Missing binaries are an error (run `make env`); only a non-root user skips.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from devcluster.cluster import DevCluster
from devcluster.kubetools import (
    RESTRICTED_LABELS,
    KubeError,
    KubeRest,
    ensure_namespace,
    wait_default_service_account,
)
from devcluster.runtime import cleanup_stale
from tests.fixtures.lab import require_root


@pytest.fixture(scope="session")
def dev_cluster() -> Iterator[DevCluster]:
    require_root()
    cleanup_stale()
    with DevCluster(node_count=2, images=("traceroute-probe",)) as cluster:
        yield cluster


@pytest.fixture
def node_namespace(dev_cluster: DevCluster) -> Iterator[str]:
    """A fresh namespace (PodSecurity `restricted` enforced) with the registry's pull Secret
    `regcred`, deleted afterwards."""
    with KubeRest(dev_cluster.kubeconfig) as kube:
        name = f"t-{uuid.uuid4().hex[:10]}"
        ensure_namespace(kube, name, RESTRICTED_LABELS)
        wait_default_service_account(kube, name)
        kube.post(f"/api/v1/namespaces/{name}/secrets", dev_cluster.pull_secret("regcred"))
        try:
            yield name
        finally:
            with contextlib.suppress(KubeError, OSError):
                kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def kube(dev_cluster: DevCluster) -> Iterator[KubeRest]:
    """Admin access to the cluster with real nodes (shadows the pod-runner cluster's)."""
    with KubeRest(dev_cluster.kubeconfig) as rest:
        yield rest
