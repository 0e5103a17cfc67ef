"""pytest fixtures for the control plane, pod runner, Pushgateway and Prometheus.

Session-scoped servers (started once, stopped at the end, also killed if pytest is killed):
`control_plane`, `pushgateway`, `prometheus`. Per test: `k8s_namespace` (a fresh namespace
with PodSecurity `restricted` enforced), `pod_runner_factory` / `pod_runner`.

Missing binaries are an error (run `make env`), never a skip; only a non-root user skips,
because the pod runner and the lab need root.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.realenv.controlplane import ControlPlane
from tests.realenv.kubetools import (
    RESTRICTED_LABELS,
    KubeError,
    KubeRest,
    ensure_namespace,
    wait_default_service_account,
)
from tests.realenv.lab_fixtures import require_root
from tests.realenv.podrunner import PodRunner
from tests.realenv.promstack import Prometheus, Pushgateway
from tests.realenv.runtime import cleanup_stale

PodRunnerFactory = Callable[..., PodRunner]


@pytest.fixture(scope="session")
def _stale_cluster_leftovers_removed() -> None:
    """Once per session: kill servers and remove directories of crashed earlier runs."""
    require_root()
    cleanup_stale()


@pytest.fixture(scope="session")
def control_plane(_stale_cluster_leftovers_removed: None) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager, shared by the session."""
    cp = ControlPlane().start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def admin_api(control_plane: ControlPlane) -> Iterator[k8s.ApiClient]:
    """The official client as cluster admin (what the operator uses)."""
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Iterator[KubeRest]:
    """Plain-JSON admin access (dicts in, dicts out) for test setup and assertions."""
    with KubeRest(control_plane.kubeconfig) as rest:
        yield rest


@pytest.fixture
def k8s_namespace(kube: KubeRest) -> Iterator[str]:
    """A fresh namespace (PodSecurity `restricted` enforced) with its `default` ServiceAccount,
    deleted after the test (not waited for)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    ensure_namespace(kube, name, RESTRICTED_LABELS)
    wait_default_service_account(kube, name)
    try:
        yield name
    finally:
        with contextlib.suppress(KubeError, OSError):
            kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def pod_runner_factory(control_plane: ControlPlane) -> Iterator[PodRunnerFactory]:
    """Callable(**PodRunner kwargs) -> started PodRunner; all stopped after the test."""
    require_root()
    runners: list[PodRunner] = []

    def start(**kwargs: Any) -> PodRunner:
        runner = PodRunner(control_plane.kubeconfig, **kwargs)
        runners.append(runner)
        return runner.start()

    try:
        yield start
    finally:
        for runner in reversed(runners):
            runner.stop()
    # a status write the apiserver refused means the kubelet emulation diverged: loud
    errors = [e for runner in runners for e in runner.errors]
    if errors:
        pytest.fail(f"pod runner errors: {errors[:5]}")


@pytest.fixture
def pod_runner(pod_runner_factory: PodRunnerFactory, k8s_namespace: str) -> PodRunner:
    """A pod runner for the pods of `k8s_namespace` (own fresh network namespace per pod)."""
    return pod_runner_factory(namespace=k8s_namespace)


@pytest.fixture(scope="session")
def pushgateway(_stale_cluster_leftovers_removed: None) -> Iterator[Pushgateway]:
    """Pushgateway on the lab's cluster gateway address (reachable from lab pods)."""
    with Pushgateway() as pgw:
        yield pgw


@pytest.fixture(scope="session")
def prometheus(pushgateway: Pushgateway) -> Iterator[Prometheus]:
    """Prometheus scraping the session's Pushgateway (honor_labels) every second.

    Tests that change rule files or targets call `prometheus.reload(...)`; restore with
    `prometheus.reload(rule_files=[], scrape_targets=[])` when done.
    """
    with Prometheus(pushgateway=pushgateway) as prom:
        yield prom
