"""Fixtures of the operator's real-cluster tests: the operator process with its own RBAC."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeError, KubeRest, ensure_namespace
from devcluster.monitoring_crds import install_crds as install_monitoring_crds
from devcluster.operator_process import OperatorProcess, install_crd, probe_path
from devcluster.promstack import Pushgateway


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> None:
    install_crd(control_plane.kubeconfig)
    install_monitoring_crds(control_plane.kubeconfig)


@pytest.fixture
def operator_namespace(kube: KubeRest) -> Iterator[str]:
    name = f"trop-{uuid.uuid4().hex[:8]}"
    ensure_namespace(kube, name)
    try:
        yield name
    finally:
        with contextlib.suppress(KubeError):
            kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def operator_factory(  # noqa: PLR0917 - fixtures
    crds: None,
    control_plane: ControlPlane,
    kube: KubeRest,
    k8s_namespace: str,
    operator_namespace: str,
    pushgateway: Pushgateway,
    tmp_path: Path,
) -> Iterator[Callable[..., OperatorProcess]]:
    """Builds (not starts) operator processes for the test's namespace, with extra env;
    stops them all afterwards and releases the probes they would have finalized."""
    made: list[OperatorProcess] = []

    def make(
        env: dict[str, str] | None = None, secret_namespaces: tuple[str, ...] = ()
    ) -> OperatorProcess:
        process = OperatorProcess(
            control_plane,
            kube,
            namespaces=[k8s_namespace],
            operator_namespace=operator_namespace,
            pushgateway_url=pushgateway.url,
            log_dir=tmp_path,
            env=env or {},
            secret_namespaces=secret_namespaces,
        )
        made.append(process)
        return process

    try:
        yield make
    finally:
        for process in made:
            process.stop()
        # probes keep their finalizer without an operator: release them so the namespace goes
        for item in kube.get(probe_path(k8s_namespace)).get("items", []):
            with contextlib.suppress(KubeError):
                kube.merge_patch(
                    probe_path(k8s_namespace, item["metadata"]["name"]),
                    {"metadata": {"finalizers": None}},
                )


@pytest.fixture
def operator(operator_factory: Callable[..., OperatorProcess]) -> OperatorProcess:
    return operator_factory().start()
