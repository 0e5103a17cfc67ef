"""Runs that never start (pending.PendingRuns): stuck pods and expired Jobs against the fakes."""

from __future__ import annotations

from typing import Any

from traceroute_operator.apply import ChildApplier
from traceroute_operator.config import OperatorConfig
from traceroute_operator.context import OperatorContext
from traceroute_operator.metrics import OperatorMetrics
from traceroute_operator.pending import PendingRuns, job_start_problem, pod_start_problem
from traceroute_operator.runs import RunReader
from traceroute_operator.shared import SharedMonitoring
from traceroute_operator.status import condition

from tests.operator.fakes import TS, Clock, FakeKube, event_reasons, finished, pod, probe_body

CONFIG = OperatorConfig(probe_image="registry.example/probe:1")
LABELS = {
    "traceroute.dev/probe": "edge",
    "traceroute.dev/probe-uid": "uid-edge",
    "app.kubernetes.io/managed-by": "traceroute-operator",
}


def pending_pod(uid: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"trp-edge-{uid}",
            "namespace": "net",
            "uid": uid,
            "labels": {**LABELS, "batch.kubernetes.io/job-name": f"trp-edge-job-{uid}"},
        },
        "status": {"phase": "Pending", **status},
    }


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {
        "containerStatuses": [
            {"name": "probe", "state": {"waiting": {"reason": reason, "message": message}}}
        ]
    }


def expired_job(uid: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"trp-edge-job-{uid}",
            "namespace": "net",
            "uid": uid,
            "labels": LABELS,
        },
        "spec": {"activeDeadlineSeconds": 130},
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ]
        },
    }


def setup() -> tuple[FakeKube, PendingRuns, OperatorContext]:
    kube = FakeKube()
    ctx = OperatorContext.create(kube, CONFIG, OperatorMetrics(), Clock(TS + 5))
    ChildApplier(ctx, SharedMonitoring(ctx)).reconcile(kube.put(probe_body()))
    return kube, PendingRuns(ctx), ctx


def stored(kube: FakeKube) -> dict[str, Any]:
    probe = kube.stored("tracerouteprobes", "net", "edge")
    assert probe is not None
    return dict(probe["status"])


def test_which_pods_and_jobs_are_runs_that_do_not_start() -> None:
    assert pod_start_problem(pending_pod("a", waiting("ContainerCreating"))) is None
    assert pod_start_problem(pending_pod("a", {})) is None  # not scheduled yet, no verdict
    assert pod_start_problem(pending_pod("a", waiting("ErrImagePull", "not found"))) == (
        "ErrImagePull",
        "not found",
    )
    unschedulable = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available",
            }
        ]
    }
    assert pod_start_problem(pending_pod("a", unschedulable)) == (
        "Unschedulable",
        "0/3 nodes are available",
    )
    running = pending_pod("a", waiting("ErrImagePull"))
    running["status"]["phase"] = "Running"
    assert pod_start_problem(running) is None
    assert job_start_problem(expired_job("j")) is not None
    backoff = expired_job("j")
    backoff["status"]["conditions"][0]["reason"] = "BackoffLimitExceeded"
    assert job_start_problem(backoff) is None  # its pod ran and failed: a result, not this


def test_a_pod_stuck_on_its_image_makes_the_probe_not_ready_with_one_event() -> None:
    kube, verb, _ = setup()
    assert condition(stored(kube), "Ready")["status"] == "True"  # type: ignore[index]
    verb.handle_pod(pending_pod("p1", waiting("ErrImagePull", "manifest unknown")))
    status = stored(kube)
    ready = condition(status, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "ErrImagePull")
    assert "pod trp-edge-p1: manifest unknown" in ready["message"]
    assert condition(status, "Stalled")["status"] == "True"  # type: ignore[index]
    assert condition(status, "RunsStarted")["reason"] == "ErrImagePull"  # type: ignore[index]
    assert event_reasons(kube) == ["RunNotStarted"]
    assert "ErrImagePull" in kube.events[0]["message"]
    # the same pod again, and the next run's pod for the same reason: no new Event
    verb.handle_pod(pending_pod("p1", waiting("ErrImagePull", "manifest unknown")))
    verb.handle_pod(pending_pod("p2", waiting("ErrImagePull", "manifest unknown")))
    assert event_reasons(kube) == ["RunNotStarted"]
    # the kubelet backs off: a new reason is a new Event
    verb.handle_pod(pending_pod("p2", waiting("ImagePullBackOff", "back-off")))
    assert event_reasons(kube) == ["RunNotStarted", "RunNotStarted"]


def test_a_run_that_starts_later_clears_it() -> None:
    kube, verb, ctx = setup()
    verb.handle_pod(pending_pod("p1", waiting("CreateContainerConfigError", "secret x not found")))
    assert condition(stored(kube), "Ready")["status"] == "False"  # type: ignore[index]
    RunReader(ctx).handle_pod(finished("p2", TS))
    status = stored(kube)
    assert condition(status, "RunsStarted")["status"] == "True"  # type: ignore[index]
    assert condition(status, "Ready")["reason"] == "CronJobReady"  # type: ignore[index]
    assert condition(status, "Stalled")["status"] == "False"  # type: ignore[index]


def test_a_job_past_its_deadline_without_a_read_run_is_reported() -> None:
    kube, verb, ctx = setup()
    # a Job whose run was read: it started, its deadline is no start problem
    RunReader(ctx).handle_pod(finished("read", TS))
    verb.handle_job(expired_job("read"))
    assert condition(stored(kube), "Ready")["status"] == "True"  # type: ignore[index]
    verb.handle_job(expired_job("quota"))
    ready = condition(stored(kube), "Ready")
    assert ready is not None and ready["reason"] == "DeadlineExceeded"
    assert "130 s" in ready["message"]


def test_a_finished_pod_whose_container_never_ran_keeps_its_waiting_reason() -> None:
    kube, _, ctx = setup()
    never_ran = pod("p9", {}, phase="Failed")
    never_ran["status"]["containerStatuses"] = waiting("ImagePullBackOff", "back-off")[
        "containerStatuses"
    ]
    never_ran["status"]["reason"] = "DeadlineExceeded"
    RunReader(ctx).handle_pod(never_ran)
    starts = condition(stored(kube), "RunsStarted")
    assert starts is not None and (starts["status"], starts["reason"]) == (
        "False",
        "ImagePullBackOff",
    )


def test_a_pod_of_an_earlier_probe_of_that_name_is_ignored() -> None:
    kube, verb, _ = setup()
    old = pending_pod("p1", waiting("ErrImagePull"))
    old["metadata"]["labels"]["traceroute.dev/probe-uid"] = "uid-earlier"
    verb.handle_pod(old)
    assert condition(stored(kube), "Ready")["status"] == "True"  # type: ignore[index]
    assert kube.events == []
