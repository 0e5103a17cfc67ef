"""What GitOps tools conclude from a TracerouteProbe, on the real apiserver with the real CRD.

kstatus is computed by the real sigs.k8s.io/cli-utils library (devcluster/env/kstatus, what Flux
health checks and cli-utils appliers wait on); the Argo CD health check (Lua) reads the same
objects. The operator is the real `traceroute-operator run` process with its own RBAC.

The states: new (before the operator acted), reconciled, generation bump, stalled (a schedule
that passes the schema but never fires), suspended, terminating.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.controlplane import ControlPlane
from devcluster.kstatus import KStatus, kstatus
from devcluster.kubetools import (
    RESTRICTED_LABELS,
    KubeError,
    KubeRest,
    ensure_namespace,
    wait_default_service_account,
)
from devcluster.monitoring_crds import install_crds as install_monitoring_crds
from devcluster.operator_process import (
    OperatorProcess,
    condition,
    get_probe,
    install_crd,
    probe_manifest,
    probe_path,
    wait_ready,
)
from devcluster.promstack import Pushgateway
from devcluster.runtime import wait_until
from tests.charts.argocd_health import argocd_health

pytestmark = pytest.mark.slow

HOLD = "tests.traceroute.dev/hold"  # a finalizer of the test's own, to look at Terminating


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> None:
    install_crd(control_plane.kubeconfig)
    install_monitoring_crds(control_plane.kubeconfig)


def _release_and_delete_namespace(kube: KubeRest, namespace: str) -> None:
    """Probes keep finalizers once no operator runs: drop them so the namespace goes."""
    with contextlib.suppress(KubeError):
        for item in kube.get(probe_path(namespace)).get("items", []):
            kube.merge_patch(
                probe_path(namespace, item["metadata"]["name"]),
                {"metadata": {"finalizers": None}},
            )
    with contextlib.suppress(KubeError):
        kube.delete(f"/api/v1/namespaces/{namespace}")


@pytest.fixture(scope="module")
def watched(
    crds: None,
    control_plane: ControlPlane,
    kube: KubeRest,
    pushgateway: Pushgateway,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A restricted namespace served by a running operator."""
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    operator_namespace = f"trop-{uuid.uuid4().hex[:8]}"
    ensure_namespace(kube, namespace, RESTRICTED_LABELS)
    wait_default_service_account(kube, namespace)
    process = OperatorProcess(
        control_plane,
        kube,
        namespaces=[namespace],
        operator_namespace=operator_namespace,
        pushgateway_url=pushgateway.url,
        log_dir=Path(tmp_path_factory.mktemp("kstatus-operator")),
    )
    try:
        process.start()
        yield namespace
    finally:
        process.stop()
        _release_and_delete_namespace(kube, namespace)
        with contextlib.suppress(KubeError):
            kube.delete(f"/api/v1/namespaces/{operator_namespace}")


def create(kube: KubeRest, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return kube.post(
        probe_path(namespace), probe_manifest(name, {"targets": ["192.0.2.1"], **spec})
    )


def read(kube: KubeRest, namespace: str, name: str) -> dict[str, Any]:
    probe = get_probe(kube, namespace, name)
    assert probe is not None, f"{namespace}/{name} not found"
    return probe


def wait_kstatus(
    kube: KubeRest, namespace: str, name: str, wanted: str, timeout: float = 60
) -> tuple[dict[str, Any], KStatus]:
    def check() -> tuple[dict[str, Any], KStatus] | None:
        probe = read(kube, namespace, name)
        verdict = kstatus(probe)
        return (probe, verdict) if verdict.status == wanted else None

    result: tuple[dict[str, Any], KStatus] = wait_until(
        check, timeout=timeout, what=f"kstatus {wanted} for {namespace}/{name}"
    )
    return result


# --- new: before the operator acted --------------------------------------------------------


def test_new_probe_is_in_progress_before_the_operator_acts(
    crds: None, kube: KubeRest, k8s_namespace: str
) -> None:
    """No operator serves k8s_namespace: the probe stays as the apiserver made it.

    The status default (status: {}, observedGeneration: 0) is not stored by the create: the
    status subresource makes the apiserver drop any status a create sends, and defaults are
    applied whenever the object is read (the create's response, GET, LIST, WATCH), so every
    reader sees observedGeneration 0 < generation 1.
    """
    ns = k8s_namespace
    created = kube.post(
        probe_path(ns),
        {
            **probe_manifest("fresh", {"targets": ["192.0.2.1"]}),
            # a manifest that carries a status (copied from a live object) must not make
            # the probe look reconciled
            "status": {
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "CronJobReady"}],
            },
        },
    )
    assert created["metadata"]["generation"] == 1
    assert created["status"] == {"observedGeneration": 0}
    got = read(kube, ns, "fresh")
    assert got["status"] == {"observedGeneration": 0}
    (listed,) = kube.get(probe_path(ns))["items"]
    assert listed["status"] == {"observedGeneration": 0}
    # what a watch-fed cache (Flux, Argo CD) holds
    events = kube.watch(
        probe_path(ns),
        resource_version="0",
        timeout_seconds=2,
        fieldSelector="metadata.name=fresh",
    )
    watched = [e["object"] for e in events if e["type"] in ("ADDED", "MODIFIED")]
    assert watched and watched[-1]["status"] == {"observedGeneration": 0}

    for obj in (created, got, listed, watched[-1]):
        verdict = kstatus(obj)
        assert verdict.status == "InProgress", verdict
        assert "generation is 1, but latest observed generation is 0" in verdict.message
        assert argocd_health(obj).status == "Progressing"
    # the cause the default removes: kstatus reads a custom resource without status as Current
    without_status = {k: v for k, v in got.items() if k != "status"}
    assert kstatus(without_status).status == "Current"


# --- the operator's states -----------------------------------------------------------------


def test_reconciled_probe_is_current(kube: KubeRest, watched: str) -> None:
    create(kube, watched, "web")
    probe = wait_ready(kube, watched, "web")
    verdict = kstatus(probe)
    # kstatus's last rule for custom resources: a Ready condition decides when it is there
    assert (verdict.status, verdict.message) == ("Current", "Resource is Ready")
    assert argocd_health(probe).status == "Healthy"


def test_generation_bump_is_in_progress_until_observed(kube: KubeRest, watched: str) -> None:
    create(kube, watched, "bump")
    wait_ready(kube, watched, "bump")
    # the patch's response is the object right after the spec write: nothing acted on it yet
    bumped = kube.merge_patch(probe_path(watched, "bump"), {"spec": {"maxHops": 12}})
    assert bumped["metadata"]["generation"] == 2
    assert bumped["status"]["observedGeneration"] == 1
    verdict = kstatus(bumped)
    assert verdict.status == "InProgress", verdict
    assert "generation is 2, but latest observed generation is 1" in verdict.message
    reconciling = verdict.condition("Reconciling")
    assert reconciling is not None and reconciling["reason"] == "LatestGenerationNotObserved"
    assert argocd_health(bumped).status == "Progressing"
    probe, _ = wait_kstatus(kube, watched, "bump", "Current")
    assert probe["status"]["observedGeneration"] == 2
    assert argocd_health(probe).status == "Healthy"


def test_unrunnable_schedule_stalls_and_reads_failed(kube: KubeRest, watched: str) -> None:
    """31 February never comes: the CRD's shape check passes, the operator stalls."""
    create(kube, watched, "feb31", schedule="0 0 31 2 *")
    probe, verdict = wait_kstatus(kube, watched, "feb31", "Failed")
    stalled = condition(probe, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
    assert "never fires" in stalled["message"]
    assert verdict.message == stalled["message"]
    kstalled = verdict.condition("Stalled")
    assert kstalled is not None and kstalled["status"] == "True"
    assert probe["status"]["observedGeneration"] == probe["metadata"]["generation"]
    health = argocd_health(probe)
    assert (health.status, health.message) == ("Degraded", stalled["message"])
    # a spec fix goes through InProgress (new generation) back to Current
    fixed = kube.merge_patch(probe_path(watched, "feb31"), {"spec": {"schedule": "0 0 28 2 *"}})
    assert kstatus(fixed).status == "InProgress"
    probe, _ = wait_kstatus(kube, watched, "feb31", "Current")
    assert condition(probe, "Stalled")["status"] == "False"
    assert argocd_health(probe).status == "Healthy"


def test_suspended_probe_is_current_and_suspended_for_argocd(kube: KubeRest, watched: str) -> None:
    create(kube, watched, "paused", suspend=True)
    probe = wait_ready(kube, watched, "paused")
    assert kstatus(probe).status == "Current"
    assert argocd_health(probe).status == "Suspended"


def test_deleting_probe_is_terminating(kube: KubeRest, watched: str) -> None:
    create(kube, watched, "bye")
    wait_ready(kube, watched, "bye")
    # hold it in Terminating: the operator's own cleanup may finish within milliseconds
    probe = read(kube, watched, "bye")
    kube.merge_patch(
        probe_path(watched, "bye"),
        {"metadata": {"finalizers": [*probe["metadata"]["finalizers"], HOLD]}},
    )
    kube.delete(probe_path(watched, "bye"))
    deleting = read(kube, watched, "bye")
    assert deleting["metadata"].get("deletionTimestamp")
    verdict = kstatus(deleting)
    assert (verdict.status, verdict.message) == ("Terminating", "Resource scheduled for deletion")
    assert argocd_health(deleting).status == "Progressing"
    # the operator finishes its cleanup; then only the test's finalizer is left
    wait_until(
        lambda: read(kube, watched, "bye")["metadata"]["finalizers"] == [HOLD],
        timeout=30,
        what="operator finalizer done",
    )
    kube.merge_patch(probe_path(watched, "bye"), {"metadata": {"finalizers": None}})
    wait_until(lambda: get_probe(kube, watched, "bye") is None, timeout=30, what="probe gone")
