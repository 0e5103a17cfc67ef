"""The operator against the real control plane, with its own RBAC, in restricted namespaces.

Real: etcd + kube-apiserver (RBAC, PodSecurity) + kube-controller-manager (CronJob, Job,
GC), the prometheus-operator CRDs, a Pushgateway, the network lab and the pod runner (the
kubelet stand-in) running the real probe. The operator is the `traceroute-operator run`
process with a ServiceAccount token that has exactly data/rbac.yaml.

Runs are started as `kubectl create job --from=cronjob/...` does (a Job from the CronJob's
jobTemplate), so the tests do not wait for cron minutes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeError, KubeRest, ensure_namespace, kubectl
from devcluster.lab import Lab, Topology
from devcluster.operator_process import (
    OperatorProcess,
    condition,
    create_job_from_cronjob,
    events_for,
    get_or_none,
    get_probe,
    install_crd,
    is_ready,
    probe_manifest,
    probe_path,
    wait_ready,
)
from devcluster.promstack import Pushgateway
from devcluster.runtime import wait_until

pytestmark = pytest.mark.slow

_job_counter = itertools.count(1)


def cronjob_of(kube: KubeRest, namespace: str, probe: str) -> dict[str, Any] | None:
    return get_or_none(kube, f"/apis/batch/v1/namespaces/{namespace}/cronjobs/trp-{probe}")


def create_probe(kube: KubeRest, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return kube.post(probe_path(namespace), probe_manifest(name, spec))


# --- CR -> CronJob ---------------------------------------------------------------------------


def test_probe_becomes_a_restricted_cronjob(
    operator: OperatorProcess, kube: KubeRest, k8s_namespace: str, operator_namespace: str
) -> None:
    created = create_probe(
        kube, k8s_namespace, "edge", {"targets": ["192.0.2.10"], "expectedHops": 4}
    )
    probe = wait_ready(kube, k8s_namespace, "edge")
    status = probe["status"]
    assert status["observedGeneration"] == 1
    assert status["cronJobName"] == "trp-edge"
    assert condition(probe, "Stalled")["status"] == "False"
    assert condition(probe, "Reconciling")["status"] == "False"
    assert condition(probe, "Reachable")["status"] == "Unknown"
    assert condition(probe, "MonitoringReady")["status"] == "True", condition(
        probe, "MonitoringReady"
    )
    assert "traceroute.dev/cleanup" in probe["metadata"]["finalizers"]
    assert any(k.startswith("traceroute.dev/") for k in probe["metadata"].get("annotations", {}))

    cronjob = cronjob_of(kube, k8s_namespace, "edge")
    assert cronjob is not None
    (owner,) = cronjob["metadata"]["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"] and owner["kind"] == "TracerouteProbe"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod_spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    # the namespace enforces PodSecurity restricted: the apiserver admits the probe pod
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "admission-check", "namespace": k8s_namespace},
        "spec": pod_spec,
    }
    kube.request(
        "POST", f"/api/v1/namespaces/{k8s_namespace}/pods", body=pod, params={"dryRun": "All"}
    )

    # monitoring objects: the probe's PrometheusRule (owned), the shared ones
    rule = get_or_none(
        kube,
        f"/apis/monitoring.coreos.com/v1/namespaces/{k8s_namespace}/prometheusrules/traceroute-probe-edge",
    )
    assert (
        rule is not None
        and rule["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    )
    monitors = kube.get(
        f"/apis/monitoring.coreos.com/v1/namespaces/{operator_namespace}/servicemonitors"
    )
    assert len(monitors["items"]) == 1
    dashboards = kube.get(
        f"/api/v1/namespaces/{operator_namespace}/configmaps", labelSelector="grafana_dashboard=1"
    )
    assert len(dashboards["items"]) >= 2
    assert operator.metric("traceroute_operator_reconciles_total", result="ok") >= 1


# --- runs in the lab -------------------------------------------------------------------------


@pytest.fixture
def lab_runner(lab_factory: Any, pod_runner_factory: Any, k8s_namespace: str) -> Any:
    """Callable(Topology) -> Lab whose "probe" host runs this namespace's pods."""

    def start(topology: Topology) -> Lab:
        lab: Lab = lab_factory(topology)
        lab.attach_cluster_network("probe")  # reaches the Pushgateway, nothing else
        # scheduled runs come minutes apart and find the routers' ICMP rate-limit buckets
        # full; these runs come back to back, so the limits are lifted to match
        lab.lift_icmp_ratelimits(routers_only=True, burst=10_000, per_sec=100_000)
        pod_runner_factory(namespace=k8s_namespace, netns_for_pod=lambda pod: lab.netns("probe"))
        return lab

    return start


def run_once(kube: KubeRest, namespace: str, probe: str, timeout: float = 90) -> dict[str, Any]:
    """One run (Job from the CronJob), then the probe once the operator read its result."""
    before = (get_probe(kube, namespace, probe) or {}).get("status", {}).get("lastRun", {})
    job = f"trp-{probe}-m{next(_job_counter)}"
    create_job_from_cronjob(kube, namespace, f"trp-{probe}", job)

    def read() -> dict[str, Any] | None:
        current = get_probe(kube, namespace, probe)
        last = ((current or {}).get("status") or {}).get("lastRun") or {}
        if last.get("jobName") == job and last.get("podUID") != before.get("podUID"):
            return current
        return None

    result: dict[str, Any] = wait_until(read, timeout=timeout, what=f"result of {job} in status")
    return result


def probe_spec(lab: Lab, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"targets": [lab.addr("target")], "maxHops": 10, "timeoutSeconds": 10}
    spec.update(extra)
    return spec


def test_lab_run_fills_status_from_the_termination_message(
    operator: OperatorProcess,
    lab_runner: Any,
    kube: KubeRest,
    k8s_namespace: str,
    pushgateway: Pushgateway,
) -> None:
    lab = lab_runner(Topology.chain(routers=3))
    target = lab.addr("target")
    create_probe(kube, k8s_namespace, "chain", probe_spec(lab, expectedHops=4))
    wait_ready(kube, k8s_namespace, "chain")
    probe = run_once(kube, k8s_namespace, "chain")
    status = probe["status"]
    (entry,) = status["targets"]
    assert entry["name"] == target
    assert entry["reached"] is True
    assert entry["hops"] == 4 and entry["expectedHops"] == 4
    assert [hop for (hop,) in entry["path"]] == lab.truth("probe", "target")
    assert status["lastRun"]["exitCode"] == 0, status["lastRun"]
    assert status["reached"] == "1/1" and status["hops"] == "4"
    assert condition(probe, "Reachable")["status"] == "True"
    assert condition(probe, "PathStable")["status"] == "True"
    assert operator.metric("traceroute_operator_runs_total", outcome="reached") == 1
    # both groups in the Pushgateway: the probe's measurements, the operator's verdict
    groups = {
        (g["labels"].get("job"), g["labels"].get("probe"), g["labels"].get("namespace"))
        for g in pushgateway.groups()
    }
    assert ("traceroute", "chain", k8s_namespace) in groups
    assert ("traceroute-operator", "chain", k8s_namespace) in groups
    text = pushgateway.metrics_text()
    assert re.search(
        rf'traceroute_path_changes_total\{{[^}}]*namespace="{k8s_namespace}"[^}}]*\}} 0', text
    ), "verdict counter missing"


def test_route_flip_is_a_confirmed_change_with_event_and_counter(
    operator: OperatorProcess,
    lab_runner: Any,
    kube: KubeRest,
    k8s_namespace: str,
    pushgateway: Pushgateway,
) -> None:
    lab = lab_runner(Topology.diamond(a_routers=2, b_routers=2))
    create_probe(kube, k8s_namespace, "flip", probe_spec(lab, pathChange={"confirmRuns": 2}))
    wait_ready(kube, k8s_namespace, "flip")
    path_a = lab.truth("probe", "target")
    run_once(kube, k8s_namespace, "flip")
    lab.flip()
    path_b = lab.truth("probe", "target")
    assert path_a != path_b
    pending = run_once(kube, k8s_namespace, "flip")
    assert pending["status"]["targets"][0]["pathChanges"] == 0  # seen once: not yet
    assert condition(pending, "PathStable")["reason"] == "ChangePending"
    assert not events_for(kube, k8s_namespace, "flip", "PathChanged")
    confirmed = run_once(kube, k8s_namespace, "flip")
    entry = confirmed["status"]["targets"][0]
    seen = [pending["status"]["targets"], confirmed["status"]["targets"]]
    assert entry["pathChanges"] == 1, json.dumps(seen)
    assert confirmed["status"]["pathChanges"] == 1
    differing = [
        f"ttl {ttl}: {a} -> {b}"
        for ttl, (a, b) in enumerate(zip(path_a, path_b, strict=False), start=1)
        if a != b
    ]
    assert entry["lastChange"] == "; ".join(differing)
    assert condition(confirmed, "PathStable")["status"] == "False"
    (event,) = wait_until(
        lambda: events_for(kube, k8s_namespace, "flip", "PathChanged"), timeout=10, what="event"
    )
    assert event["type"] == "Warning" and differing[0] in event["message"]
    assert operator.metric("traceroute_operator_path_changes_total", probe="flip") == 1
    assert re.search(
        rf'traceroute_path_changes_total\{{[^}}]*namespace="{k8s_namespace}"[^}}]*\}} 1',
        pushgateway.metrics_text(),
    )
    # the same path again: stable, no second change
    again = run_once(kube, k8s_namespace, "flip")
    assert again["status"]["pathChanges"] == 1
    assert condition(again, "PathStable")["status"] == "True"


def test_silent_hop_flicker_is_no_change(
    operator: OperatorProcess, lab_runner: Any, kube: KubeRest, k8s_namespace: str
) -> None:
    lab = lab_runner(Topology.chain(routers=3))
    # confirmRuns 1: the strictest setting, a flicker would count at once
    create_probe(kube, k8s_namespace, "flicker", probe_spec(lab, pathChange={"confirmRuns": 1}))
    wait_ready(kube, k8s_namespace, "flicker")
    run_once(kube, k8s_namespace, "flicker")
    lab.silence("r2")
    try:
        silent = run_once(kube, k8s_namespace, "flicker")
    finally:
        lab.unsilence("r2")
    assert silent["status"]["targets"][0]["path"][1] == []  # r2 really was silent
    after = run_once(kube, k8s_namespace, "flicker")
    assert after["status"]["pathChanges"] == 0
    assert not events_for(kube, k8s_namespace, "flicker", "PathChanged")
    assert operator.metric("traceroute_operator_path_changes_total") == 0


# --- runs that never start -----------------------------------------------------------------


def _not_ready_because(kube: KubeRest, namespace: str, name: str, reason: str) -> dict[str, Any]:
    def stuck() -> dict[str, Any] | None:
        probe = get_probe(kube, namespace, name)
        ready = condition(probe, "Ready")
        return probe if (ready.get("status"), ready.get("reason")) == ("False", reason) else None

    found: dict[str, Any] = wait_until(stuck, timeout=20, what=f"Ready=False {reason}")
    return found


def test_runs_that_cannot_start_turn_the_probe_not_ready_with_the_kubelets_reason(
    operator_factory: Callable[..., OperatorProcess],
    pod_runner: Any,
    kube: KubeRest,
    k8s_namespace: str,
) -> None:
    # the admin's default basic-auth Secret is missing in this namespace: the kubelet (pod
    # runner) cannot create the container
    operator_factory({"TRACEROUTE_PUSHGATEWAY_BASIC_AUTH_SECRET": "absent-auth"}).start()
    create_probe(kube, k8s_namespace, "nosecret", {"targets": ["192.0.2.1"]})
    create_probe(
        kube,
        k8s_namespace,
        "nonode",
        {"targets": ["192.0.2.1"], "nodeSelector": {"topology.kubernetes.io/zone": "mars"}},
    )
    for name in ("nosecret", "nonode"):
        wait_ready(kube, k8s_namespace, name)
        create_job_from_cronjob(kube, k8s_namespace, f"trp-{name}", f"trp-{name}-m1")

    probe = _not_ready_because(kube, k8s_namespace, "nosecret", "CreateContainerConfigError")
    assert condition(probe, "Stalled")["status"] == "True"
    assert condition(probe, "RunsStarted")["reason"] == "CreateContainerConfigError"
    assert "absent-auth" in condition(probe, "Ready")["message"]
    (event,) = wait_until(
        lambda: events_for(kube, k8s_namespace, "nosecret", "RunNotStarted"),
        timeout=10,
        what="RunNotStarted event",
    )
    assert event["type"] == "Warning" and "CreateContainerConfigError" in event["message"]

    probe = _not_ready_because(kube, k8s_namespace, "nonode", "Unschedulable")
    assert "didn't match" in condition(probe, "RunsStarted")["message"]
    assert events_for(kube, k8s_namespace, "nonode", "RunNotStarted")

    # the fix is a new spec: it is not reported failed before a run of it could start
    kube.merge_patch(probe_path(k8s_namespace, "nonode"), {"spec": {"nodeSelector": None}})
    fixed = wait_ready(kube, k8s_namespace, "nonode")
    assert condition(fixed, "RunsStarted")["reason"] == "AwaitingRun"
    assert condition(fixed, "Stalled")["status"] == "False"


def kubectl_get_row(control_plane: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    """`kubectl get trp NAME` as the user sees it: the printer columns, by header."""
    out = kubectl(["get", "trp", name, "-n", namespace], kubeconfig=control_plane.kubeconfig)
    header, row, *rest = out.stdout.splitlines()
    assert not rest, out.stdout  # one line per probe
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [header[a:b].strip() for a, b in itertools.pairwise([*starts, None])]
    cells = [row[a:b].strip() for a, b in itertools.pairwise([*starts, None])]
    return dict(zip(names, cells, strict=True))


def run_with_extra_args(kube: KubeRest, namespace: str, probe: str, extra: list[str]) -> str:
    """A Job from the CronJob's template with arguments added before the targets."""
    job = f"trp-{probe}-x{next(_job_counter)}"
    source = kube.get(f"/apis/batch/v1/namespaces/{namespace}/cronjobs/trp-{probe}")
    template = source["spec"]["jobTemplate"]
    (container,) = template["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    container["args"] = [*args[: args.index("--")], *extra, *args[args.index("--") :]]
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job, "namespace": namespace, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    kube.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", body)
    return job


def test_kubectl_get_shows_the_current_targets_and_why_a_run_failed(
    operator: OperatorProcess,
    lab_runner: Any,
    kube: KubeRest,
    k8s_namespace: str,
    control_plane: ControlPlane,
) -> None:
    lab = lab_runner(Topology.diamond(a_routers=2, b_routers=2))
    create_probe(kube, k8s_namespace, "cols", probe_spec(lab, pathChange={"confirmRuns": 1}))
    wait_ready(kube, k8s_namespace, "cols")
    run_once(kube, k8s_namespace, "cols")
    lab.flip()
    changed = run_once(kube, k8s_namespace, "cols")
    assert changed["status"]["pathChanges"] == 1
    row = kubectl_get_row(control_plane, k8s_namespace, "cols")
    assert (row["HOPS"], row["REACHED"], row["CHANGES"]) == ("5", "1/1", "1"), row
    assert row["LAST CHANGE"] != "" and row["REASON"] == "CronJobReady", row

    # the target that changed is replaced by r1 (one hop away) that never ran yet
    first_hop = lab.link_addr("r1", "probe")
    kube.merge_patch(probe_path(k8s_namespace, "cols"), {"spec": {"targets": [first_hop]}})
    wait_until(
        lambda: (
            (get_probe(kube, k8s_namespace, "cols") or {})
            .get("status", {})
            .get("observedGeneration")
            == 2
        ),
        timeout=30,
        what="targets change reconciled",
    )
    probe = get_probe(kube, k8s_namespace, "cols")
    assert probe is not None
    assert [t["name"] for t in probe["status"]["targets"]] == [first_hop]
    row = kubectl_get_row(control_plane, k8s_namespace, "cols")
    assert row["TARGETS"] == f'["{first_hop}"]', row
    # the apiserver's table leaves a missing field's cell empty
    assert (row["HOPS"], row["REACHED"], row["CHANGES"]) == ("", "", "0"), row
    assert row["LAST CHANGE"] == "", row
    run_once(kube, k8s_namespace, "cols")
    row = kubectl_get_row(control_plane, k8s_namespace, "cols")
    assert (row["HOPS"], row["REACHED"], row["CHANGES"]) == ("1", "1/1", "0"), row

    # a probe that refuses its arguments (exit 2) writes no result: its stderr line shows
    job = run_with_extra_args(kube, k8s_namespace, "cols", ["--port", "80"])

    def failed_run() -> dict[str, Any] | None:
        current = get_probe(kube, k8s_namespace, "cols") or {}
        last = current.get("status", {}).get("lastRun") or {}
        return current if last.get("jobName") == job else None

    # started within a second of the last run: read although startedAt has whole seconds
    failed = wait_until(failed_run, timeout=90, what=f"result of {job} in status")
    last_run = failed["status"]["lastRun"]
    assert last_run["exitCode"] == 2
    assert last_run["errors"] == [
        "run left no result (exit code 2, reason Error): "
        "traceroute-probe: error: --port applies to udp and tcp only"
    ], last_run
    assert "--port applies to udp and tcp only" in condition(failed, "Reachable")["message"]
    (event,) = wait_until(
        lambda: events_for(kube, k8s_namespace, "cols", "RunFailed"), timeout=10, what="event"
    )
    assert event["message"] == last_run["errors"][0]  # once, as in status
    row = kubectl_get_row(control_plane, k8s_namespace, "cols")
    assert row["REASON"] == "RunFailed" and row["READY"] == "True", row


def test_kubectl_get_shows_why_a_probe_is_stalled(
    operator: OperatorProcess, kube: KubeRest, k8s_namespace: str, control_plane: ControlPlane
) -> None:
    create_probe(
        kube, k8s_namespace, "stuck", {"targets": ["192.0.2.1"], "image": "evil.example/probe:1"}
    )

    def stalled() -> dict[str, Any] | None:
        probe = get_probe(kube, k8s_namespace, "stuck")
        return probe if condition(probe, "Stalled").get("status") == "True" else None

    probe = wait_until(stalled, timeout=30, what="Stalled condition")
    assert condition(probe, "Stalled")["reason"] == "ProbeImageNotAllowed"
    row = kubectl_get_row(control_plane, k8s_namespace, "stuck")
    assert (row["READY"], row["REASON"]) == ("False", "ProbeImageNotAllowed"), row


# --- spec changes, suspend, delete -------------------------------------------------------------


def test_spec_update_patches_the_cronjob_and_suspend(
    operator: OperatorProcess, kube: KubeRest, k8s_namespace: str
) -> None:
    create_probe(kube, k8s_namespace, "upd", {"targets": ["192.0.2.1"]})
    wait_ready(kube, k8s_namespace, "upd")
    kube.merge_patch(
        probe_path(k8s_namespace, "upd"),
        {
            "spec": {
                "schedule": "*/15 * * * *",
                "maxHops": 12,
                "targets": ["192.0.2.1", "192.0.2.2"],
            }
        },
    )
    probe = wait_ready(kube, k8s_namespace, "upd")
    assert probe["status"]["observedGeneration"] == 2
    assert [t["name"] for t in probe["status"]["targets"]] == ["192.0.2.1", "192.0.2.2"]
    cronjob = cronjob_of(kube, k8s_namespace, "upd")
    assert cronjob is not None
    assert cronjob["spec"]["schedule"] == "*/15 * * * *"
    args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-hops") + 1] == "12"
    assert args[-2:] == ["192.0.2.1", "192.0.2.2"]

    kube.merge_patch(probe_path(k8s_namespace, "upd"), {"spec": {"suspend": True}})
    probe = wait_ready(kube, k8s_namespace, "upd")
    assert condition(probe, "Ready")["reason"] == "Suspended"
    cronjob = cronjob_of(kube, k8s_namespace, "upd")
    assert cronjob is not None and cronjob["spec"]["suspend"] is True
    kube.merge_patch(probe_path(k8s_namespace, "upd"), {"spec": {"suspend": False}})
    wait_ready(kube, k8s_namespace, "upd")
    cronjob = cronjob_of(kube, k8s_namespace, "upd")
    assert cronjob is not None and cronjob["spec"]["suspend"] is False


def test_someone_deleting_the_cronjob_gets_it_back_on_resync(
    operator_factory: Callable[..., OperatorProcess], kube: KubeRest, k8s_namespace: str
) -> None:
    process = operator_factory({"TRACEROUTE_RESYNC_SECONDS": "3"}).start()
    try:
        create_probe(kube, k8s_namespace, "drift", {"targets": ["192.0.2.1"]})
        wait_ready(kube, k8s_namespace, "drift")
        kube.delete(f"/apis/batch/v1/namespaces/{k8s_namespace}/cronjobs/trp-drift")
        wait_until(
            lambda: (
                (cj := cronjob_of(kube, k8s_namespace, "drift"))
                and not cj["metadata"].get("deletionTimestamp")
            ),
            timeout=30,
            what="CronJob re-created by the resync",
        )
        kube.delete(probe_path(k8s_namespace, "drift"))
        wait_until(
            lambda: get_probe(kube, k8s_namespace, "drift") is None, timeout=30, what="probe gone"
        )
    finally:
        process.stop()


def test_a_cronjob_deleted_or_edited_by_hand_is_restored_within_seconds(
    operator: OperatorProcess, kube: KubeRest, k8s_namespace: str
) -> None:
    # the default resync (600 s) is far away: only the CronJob watch can bring it back
    create_probe(kube, k8s_namespace, "hand", {"targets": ["192.0.2.1"]})
    wait_ready(kube, k8s_namespace, "hand")
    path = f"/apis/batch/v1/namespaces/{k8s_namespace}/cronjobs/trp-hand"
    first_uid = kube.get(path)["metadata"]["uid"]
    kube.delete(path)

    def recreated() -> dict[str, Any] | None:
        cronjob = cronjob_of(kube, k8s_namespace, "hand")
        if cronjob is None or cronjob["metadata"]["uid"] == first_uid:
            return None
        return None if cronjob["metadata"].get("deletionTimestamp") else cronjob

    wait_until(recreated, timeout=10, what="CronJob re-created by the watch")
    assert is_ready(get_probe(kube, k8s_namespace, "hand") or {"metadata": {}})

    # the operator's own schedule (the default H/5, resolved for this probe)
    ours = kube.get(path)["spec"]["schedule"]
    assert ours != "0 3 * * *"
    kube.merge_patch(path, {"spec": {"schedule": "0 3 * * *", "suspend": True}})
    wait_until(
        lambda: (
            (cronjob := cronjob_of(kube, k8s_namespace, "hand")) is not None
            and cronjob["spec"]["schedule"] == ours
            and cronjob["spec"]["suspend"] is False
        ),
        timeout=10,
        what="hand-edited schedule restored",
    )
    assert operator.metric("traceroute_operator_cronjob_restores_total", change="deleted") == 1
    assert operator.metric("traceroute_operator_cronjob_restores_total", change="changed") >= 1


def test_delete_removes_cronjob_pushgateway_groups_and_shared_objects(
    operator: OperatorProcess,
    kube: KubeRest,
    k8s_namespace: str,
    operator_namespace: str,
    pushgateway: Pushgateway,
) -> None:
    create_probe(kube, k8s_namespace, "gone", {"targets": ["192.0.2.1"]})
    create_probe(kube, k8s_namespace, "stays", {"targets": ["192.0.2.2"]})
    wait_ready(kube, k8s_namespace, "gone")
    wait_ready(kube, k8s_namespace, "stays")
    for probe in ("gone", "stays"):
        for job in ("traceroute", "traceroute-operator"):
            pushgateway.push(
                job, {"namespace": k8s_namespace, "probe": probe}, "trop_delete_test_marker 1\n"
            )

    def groups_of(probe: str) -> set[str]:
        return {
            g["labels"]["job"]
            for g in pushgateway.groups()
            if g["labels"].get("probe") == probe and g["labels"].get("namespace") == k8s_namespace
        }

    assert groups_of("gone") == {"traceroute", "traceroute-operator"}
    monitors = f"/apis/monitoring.coreos.com/v1/namespaces/{operator_namespace}/servicemonitors"
    kube.delete(probe_path(k8s_namespace, "gone"))
    wait_until(
        lambda: get_probe(kube, k8s_namespace, "gone") is None, timeout=30, what="probe gone"
    )
    assert groups_of("gone") == set()
    assert groups_of("stays") == {"traceroute", "traceroute-operator"}
    wait_until(
        lambda: cronjob_of(kube, k8s_namespace, "gone") is None, timeout=30, what="CronJob gone"
    )
    assert cronjob_of(kube, k8s_namespace, "stays") is not None
    assert len(kube.get(monitors)["items"]) == 1  # another probe still needs it

    kube.delete(probe_path(k8s_namespace, "stays"))
    wait_until(
        lambda: get_probe(kube, k8s_namespace, "stays") is None, timeout=30, what="probe gone"
    )
    assert groups_of("stays") == set()
    assert kube.get(monitors)["items"] == []
    dashboards = kube.get(
        f"/api/v1/namespaces/{operator_namespace}/configmaps", labelSelector="grafana_dashboard=1"
    )
    assert dashboards["items"] == []
    # the owned PrometheusRules go with their probes (garbage collector)
    wait_until(
        lambda: (
            not kube.get(
                f"/apis/monitoring.coreos.com/v1/namespaces/{k8s_namespace}/prometheusrules"
            )["items"]
        ),
        timeout=60,
        what="PrometheusRules garbage-collected",
    )


# --- robustness ----------------------------------------------------------------------------------


def test_killing_the_operator_mid_reconcile_leaves_no_duplicates_or_orphans(
    operator_factory: Callable[..., OperatorProcess],
    kube: KubeRest,
    k8s_namespace: str,
    pushgateway: Pushgateway,
) -> None:
    process = operator_factory()
    names = [f"k{i:02d}" for i in range(24)]
    rng = random.Random(4)
    try:
        process.start()
        for round_ in range(5):
            # new probes, spec edits and deletes land while the operator is being killed
            for name in names[round_ * 4 : round_ * 4 + 8]:
                with contextlib.suppress(KubeError):
                    create_probe(kube, k8s_namespace, name, {"targets": [f"192.0.2.{round_ + 1}"]})
            with contextlib.suppress(KubeError):
                kube.merge_patch(
                    probe_path(k8s_namespace, names[round_]), {"spec": {"maxHops": 10 + round_}}
                )
            if round_ == 3:
                kube.delete(probe_path(k8s_namespace, names[0]))
            wait_until(process.alive, timeout=60, what="operator up")
            time.sleep(rng.uniform(0.2, 1.5))
            process.kill()
            process.start(wait=False)
        wait_until(process.alive, timeout=60, what="operator up")
        expected = set(names[1:]) & {n for n in names[: 4 * 4 + 8]}
        for name in sorted(expected):
            wait_ready(kube, k8s_namespace, name, timeout=90)
        wait_until(
            lambda: get_probe(kube, k8s_namespace, names[0]) is None,
            timeout=60,
            what="deleted probe gone",
        )
    finally:
        process.stop()
    probes = {p["metadata"]["name"]: p for p in kube.get(probe_path(k8s_namespace))["items"]}
    assert set(probes) == expected
    cronjobs = kube.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/cronjobs")["items"]
    names_seen = [
        c["metadata"]["name"] for c in cronjobs if not c["metadata"].get("deletionTimestamp")
    ]
    assert sorted(names_seen) == sorted(f"trp-{n}" for n in expected)  # one each, no orphan
    for cronjob in cronjobs:
        if cronjob["metadata"].get("deletionTimestamp"):
            continue
        (owner,) = cronjob["metadata"]["ownerReferences"]
        probe = probes[owner["name"]]
        assert owner["uid"] == probe["metadata"]["uid"]
    for probe in probes.values():
        assert probe["metadata"]["finalizers"].count("traceroute.dev/cleanup") == 1
        assert probe["status"]["observedGeneration"] == probe["metadata"]["generation"]
        assert [c["type"] for c in probe["status"]["conditions"]].count("Ready") == 1
    edited = probes[names[2]]
    cronjob = cronjob_of(kube, k8s_namespace, names[2])
    assert cronjob is not None
    args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-hops") + 1] == str(edited["spec"]["maxHops"])
    rules = kube.get(f"/apis/monitoring.coreos.com/v1/namespaces/{k8s_namespace}/prometheusrules")[
        "items"
    ]
    assert sorted(r["metadata"]["name"] for r in rules) == sorted(
        f"traceroute-probe-{n}" for n in expected
    )
    for name in expected:
        kube.merge_patch(probe_path(k8s_namespace, name), {"metadata": {"finalizers": None}})
    with contextlib.suppress(requests.RequestException):
        pushgateway.wipe()


# --- invalid input -------------------------------------------------------------------------------

INVALID_SPECS: list[tuple[dict[str, Any], str]] = [
    ({}, "spec.targets"),
    ({"targets": []}, "spec.targets"),
    ({"targets": ["a"] * 2}, "spec.targets"),  # a set: duplicates refused
    ({"targets": [f"h{i}.example" for i in range(65)]}, "spec.targets"),
    ({"targets": ["-rf"]}, "spec.targets"),
    ({"targets": ["bad host"]}, "spec.targets"),
    ({"targets": ["a" * 254]}, "spec.targets"),
    ({"targets": ["a"], "schedule": "every five minutes"}, "spec.schedule"),
    ({"targets": ["a"], "schedule": "* * * *"}, "spec.schedule"),
    ({"targets": ["a"], "protocol": "sctp"}, "spec.protocol"),
    ({"targets": ["a"], "port": 443}, "spec.port"),
    ({"targets": ["a"], "protocol": "tcp", "port": 70000}, "spec.port"),
    ({"targets": ["a"], "ipFamily": "ipv4"}, "spec.ipFamily"),
    ({"targets": ["a"], "ipFamily": 5}, "spec.ipFamily"),
    ({"targets": ["a"], "maxHops": 0}, "spec.maxHops"),
    ({"targets": ["a"], "maxHops": 65}, "spec.maxHops"),
    ({"targets": ["a"], "flows": 17}, "spec.flows"),
    ({"targets": ["a"], "probesPerHop": 0}, "spec.probesPerHop"),
    ({"targets": ["a"], "timeoutSeconds": 301}, "spec.timeoutSeconds"),
    ({"targets": ["a"], "expectedHops": 31}, "spec.expectedHops"),
    ({"targets": ["a"], "expectedHopsByTarget": {"b": 3}}, "spec.expectedHopsByTarget"),
    ({"targets": ["a"], "pathChange": {"confirmRuns": 11}}, "spec.pathChange.confirmRuns"),
    ({"targets": ["a"], "metricLabels": {"target": "x"}}, "spec.metricLabels"),
    ({"targets": ["a"], "metricLabels": {"bad-name": "x"}}, "spec.metricLabels"),
    ({"targets": ["a"], "metricLabels": {f"l{i}": "x" for i in range(9)}}, "spec.metricLabels"),
    ({"targets": ["a"], "pushgateway": {"url": "pgw:9091"}}, "spec.pushgateway.url"),
    ({"targets": ["a"], "pushgateway": {"tlsCA": {}}}, "spec.pushgateway.tlsCA.secretName"),
    ({"targets": ["a"], "resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits"),
    ({"targets": ["a"], "tolerations": [{"operator": "Exists", "value": "x"}]}, "spec.tolerations"),
    ({"targets": ["a"], "imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    ({"targets": ["a"], "suspend": "yes"}, "spec.suspend"),
]


def assert_refused(
    kube: KubeRest, namespace: str, name: str, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(KubeError) as info:
        create_probe(kube, namespace, name, spec)
    assert info.value.status == 422, info.value.body
    assert field in info.value.body, (field, info.value.body[:600])


@pytest.mark.parametrize(("spec", "field"), INVALID_SPECS)
def test_invalid_probes_are_refused_naming_the_field(
    crds: None, kube: KubeRest, k8s_namespace: str, spec: dict[str, Any], field: str
) -> None:
    assert_refused(kube, k8s_namespace, "invalid", spec, field)
    assert kube.get(probe_path(k8s_namespace))["items"] == []


def test_too_long_name_is_refused(crds: None, kube: KubeRest, k8s_namespace: str) -> None:
    assert_refused(kube, k8s_namespace, "n" * 64, {"targets": ["a"]}, "metadata.name")


def test_generated_invalid_probes_are_refused_and_nothing_is_created(
    operator: OperatorProcess, kube: KubeRest, k8s_namespace: str
) -> None:
    valid = {"targets": ["192.0.2.1"], "protocol": "udp", "port": 33434}
    breakers: dict[str, st.SearchStrategy[Any]] = {
        "maxHops": st.integers(-1000, 0) | st.integers(65, 10**6),
        "flows": st.integers(-5, 0) | st.integers(17, 500),
        "probesPerHop": st.integers(11, 1000),
        "timeoutSeconds": st.integers(301, 10**5),
        "packetsPerSecond": st.integers(10001, 10**7) | st.just(0),
        "port": st.integers(65536, 10**6) | st.integers(-100, 0),
        "protocol": st.text(min_size=1, max_size=8).filter(
            lambda p: p not in ("icmp", "udp", "tcp")
        ),
        "schedule": st.text(alphabet="abc*/ 0123", max_size=20).filter(
            lambda s: len(s.split()) != 5 or not all(s.split())
        ),
        "targets": st.lists(
            st.text(alphabet=" !@#$%^&()", min_size=1, max_size=5), min_size=1, max_size=3
        )
        | st.just([]),
        "metricLabels": st.dictionaries(
            st.sampled_from(["__x", "0abc", "job", "instance", "target", "a-b"]),
            st.just("v"),
            min_size=1,
            max_size=3,
        ),
    }
    attempts = {"n": 0}

    @given(st.sampled_from(sorted(breakers)).flatmap(lambda k: st.tuples(st.just(k), breakers[k])))
    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    def check(breaker: tuple[str, Any]) -> None:
        field_name, value = breaker
        attempts["n"] += 1
        assert_refused(
            kube,
            k8s_namespace,
            f"gen-{attempts['n']}",
            {**valid, field_name: value},
            f"spec.{field_name}",
        )

    check()
    assert kube.get(probe_path(k8s_namespace))["items"] == []
    assert kube.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/cronjobs")["items"] == []


def test_what_slips_through_becomes_a_condition_not_a_crash_loop(
    operator: OperatorProcess, kube: KubeRest, k8s_namespace: str
) -> None:
    # the schema cannot check an affinity (preserve-unknown); the CronJob apply does
    create_probe(
        kube,
        k8s_namespace,
        "bad-affinity",
        {
            "targets": ["192.0.2.1"],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "Sideways"}]}
                        ]
                    }
                }
            },
        },
    )

    def stalled() -> dict[str, Any] | None:
        probe = get_probe(kube, k8s_namespace, "bad-affinity")
        return probe if condition(probe, "Stalled").get("status") == "True" else None

    probe = wait_until(stalled, timeout=30, what="Stalled condition")
    assert "affinity" in condition(probe, "Stalled")["message"]
    assert condition(probe, "Ready")["status"] == "False"
    assert probe["status"]["observedGeneration"] == 1
    (event,) = wait_until(
        lambda: events_for(kube, k8s_namespace, "bad-affinity", "InvalidSpec"),
        timeout=10,
        what="event",
    )
    assert "affinity" in event["message"]
    assert cronjob_of(kube, k8s_namespace, "bad-affinity") is None
    assert operator.alive()
    # fixing the spec recovers
    kube.merge_patch(probe_path(k8s_namespace, "bad-affinity"), {"spec": {"affinity": None}})
    wait_ready(kube, k8s_namespace, "bad-affinity")
    assert cronjob_of(kube, k8s_namespace, "bad-affinity") is not None


def test_missing_monitoring_crds_are_a_condition_not_a_crash(tmp_path: Path) -> None:
    """A cluster without prometheus-operator: CronJobs still work; MonitoringReady says why.

    Its own control plane: the session's has the monitoring CRDs installed.
    """
    with ControlPlane() as bare, KubeRest(bare.kubeconfig) as kube:
        install_crd(bare.kubeconfig)
        ensure_namespace(kube, "probes")
        process = OperatorProcess(
            bare,
            kube,
            namespaces=["probes"],
            operator_namespace="traceroute-system",
            pushgateway_url="http://127.0.0.1:9",
            log_dir=tmp_path,
        ).start()
        try:
            create_probe(kube, "probes", "plain", {"targets": ["192.0.2.1"]})
            probe = wait_ready(kube, "probes", "plain")
            monitoring = condition(probe, "MonitoringReady")
            assert monitoring["status"] == "False"
            assert (
                "PrometheusRule (monitoring.coreos.com/v1) is not served" in monitoring["message"]
            )
            assert "TRACEROUTE_PROMETHEUSRULE_ENABLED=false" in monitoring["message"]
            assert "ServiceMonitor" in monitoring["message"]
            assert cronjob_of(kube, "probes", "plain") is not None
            assert events_for(kube, "probes", "plain", "MonitoringNotGenerated")
            assert process.alive()
            assert "not served by this cluster" in process.log_tail(200)
        finally:
            process.stop()
