"""Reading a finished pod (runs.RunReader) against a fake apiserver and a fake Pushgateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from traceroute_operator.config import OperatorConfig
from traceroute_operator.context import OperatorContext
from traceroute_operator.metrics import OperatorMetrics
from traceroute_operator.results import parse_termination_message
from traceroute_operator.runs import FinishedPod, RunReader, _run_outcome
from traceroute_operator.status import condition, iso

from tests.operator.fakes import (
    A1,
    TARGET,
    TS,
    Clock,
    FakeKube,
    RecordingPushgateway,
    event_reasons,
    finished,
    message,
    pod,
    probe_body,
    recording_pushgateway,
    sample,
)

A2 = [["10.0.1.1"], ["10.2.2.1"], [TARGET]]


@pytest.fixture
def pushgateway() -> Iterator[RecordingPushgateway]:
    with recording_pushgateway() as pgw:
        yield pgw


def reader(kube: FakeKube, pushgateway: RecordingPushgateway) -> RunReader:
    config = OperatorConfig(pushgateway_url=pushgateway.url)
    return RunReader(OperatorContext.create(kube, config, OperatorMetrics(), Clock(TS + 5)))


def status_of(kube: FakeKube) -> dict[str, Any]:
    probe = kube.stored("tracerouteprobes", "net", "edge")
    assert probe is not None
    return dict(probe.get("status") or {})


def skipped(verb: RunReader, reason: str) -> float:
    return sample(verb.ctx.metrics, "traceroute_operator_runs_skipped_total", reason=reason)


def test_a_run_goes_into_the_status_and_the_verdict_is_pushed(
    pushgateway: RecordingPushgateway,
) -> None:
    kube = FakeKube()
    kube.put(probe_body())
    verb = reader(kube, pushgateway)
    verb.handle_pod(finished("p1", TS))
    status = status_of(kube)
    assert status["lastRun"]["podUID"] == "p1"
    assert status["lastRun"]["jobName"] == "trp-edge-job-p1"
    assert status["lastRunTime"] == iso(TS)
    (target,) = status["targets"]
    assert target["reached"] is True and target["hops"] == 3 and target["path"] == A1
    reachable = condition(status, "Reachable")
    assert reachable is not None and reachable["status"] == "True"
    assert sample(verb.ctx.metrics, "traceroute_operator_runs_total", outcome="reached") == 1
    ((method, path, body),) = pushgateway.requests
    assert method == "PUT"
    assert path == "/metrics/job/traceroute-operator/namespace/net/probe/edge"
    assert f'traceroute_path_changes_total{{target="{TARGET}"}} 0' in body
    assert kube.events == []


def test_each_pod_is_read_once(pushgateway: RecordingPushgateway) -> None:
    kube = FakeKube()
    kube.put(probe_body())
    verb = reader(kube, pushgateway)
    verb.handle_pod(finished("p1", TS))
    writes = len(kube.calls_of("replace_status"))
    verb.handle_pod(finished("p1", TS))  # the same pod's next watch event
    assert len(kube.calls_of("replace_status")) == writes
    # a restarted operator does not know the pod, the status does
    fresh = reader(kube, pushgateway)
    fresh.handle_pod(finished("p1", TS))
    assert skipped(fresh, "already_read") == 1
    assert len(pushgateway.requests) == 1


def test_an_older_run_is_not_folded_in(pushgateway: RecordingPushgateway) -> None:
    kube = FakeKube()
    kube.put(probe_body())
    verb = reader(kube, pushgateway)
    verb.handle_pod(finished("p2", TS + 300))
    verb.handle_pod(finished("p1", TS))
    assert status_of(kube)["lastRun"]["podUID"] == "p2"
    assert skipped(verb, "already_read") == 1


@pytest.mark.parametrize(
    ("probe", "reason"),
    [
        (probe_body(uid="uid-new"), "uid_mismatch"),  # the pod of an earlier probe "edge"
        (None, "probe_gone"),
        ({**probe_body(), "spec": {"targets": []}}, "invalid_spec"),
    ],
)
def test_pods_that_cannot_be_applied_are_counted_by_reason(
    pushgateway: RecordingPushgateway, probe: dict[str, Any] | None, reason: str
) -> None:
    kube = FakeKube()
    if probe is not None:
        kube.put(probe)
    verb = reader(kube, pushgateway)
    verb.handle_pod(finished("p1", TS))
    assert skipped(verb, reason) == 1
    assert kube.calls_of("replace_status") == []
    assert pushgateway.requests == []


def test_a_deleting_probe_takes_no_more_runs(pushgateway: RecordingPushgateway) -> None:
    kube = FakeKube()
    body = probe_body()
    body["metadata"]["deletionTimestamp"] = "2025-11-24T16:00:00Z"
    kube.put(body)
    verb = reader(kube, pushgateway)
    verb.handle_pod(finished("p1", TS))
    assert skipped(verb, "probe_gone") == 1


def test_a_pod_without_result_is_a_failed_run(pushgateway: RecordingPushgateway) -> None:
    kube = FakeKube()
    kube.put(probe_body())
    verb = reader(kube, pushgateway)
    started = "2025-11-24T16:00:00Z"
    verb.handle_pod(pod("p1", {"exitCode": 137, "reason": "OOMKilled", "startedAt": started}))
    status = status_of(kube)
    (error,) = status["lastRun"]["errors"]
    assert error.startswith("run left no result (no termination message;")
    assert "exit code 137, reason OOMKilled" in error
    assert status["lastRun"]["startTime"] == "2025-11-24T16:00:00.000Z"
    reachable = condition(status, "Reachable")
    assert reachable is not None and reachable["reason"] == "NoResult"
    assert event_reasons(kube) == ["RunFailed"]
    assert sample(verb.ctx.metrics, "traceroute_operator_runs_total", outcome="no_result") == 1
    assert pushgateway.requests == []  # nothing new to say


def test_the_probes_stderr_line_of_a_failed_run_reaches_status_and_event(
    pushgateway: RecordingPushgateway,
) -> None:
    kube = FakeKube()
    kube.put(probe_body())
    verb = reader(kube, pushgateway)
    line = "traceroute-probe: error: --port applies to udp and tcp only"
    # FallbackToLogsOnError: no result written, so the kubelet gives the log tail
    verb.handle_pod(
        pod("p1", {"exitCode": 2, "reason": "Error", "message": line + "\n"}, phase="Failed")
    )
    status = status_of(kube)
    expected = f"run left no result (exit code 2, reason Error): {line}"
    assert status["lastRun"]["errors"] == [expected]
    assert status["lastRun"]["exitCode"] == 2
    reachable = condition(status, "Reachable")
    assert reachable is not None and reachable["message"] == expected
    (event,) = [e for e in kube.events if e["reason"] == "RunFailed"]
    assert event["message"] == expected


def test_each_run_error_appears_once_in_status_and_event(
    pushgateway: RecordingPushgateway,
) -> None:
    kube = FakeKube()
    kube.put(probe_body())
    verb = reader(kube, pushgateway)
    # as the probe writes it: the target's error under "e" and as a run error line in "err"
    target: dict[str, Any] = {"n": TARGET, "a": None, "r": False, "h": 0, "p": [], "l": 1.0}
    target["e"] = "permission: cannot open an ICMP socket"
    result = {
        "v": 1,
        "ts": TS,
        "dur": 0.1,
        "code": 4,
        "err": [f"{TARGET}: permission: cannot open an ICMP socket"],
        "t": [target],
    }
    verb.handle_pod(
        pod("p1", {"exitCode": 4, "reason": "Error", "message": json.dumps(result)}, phase="Failed")
    )
    line = f"{TARGET}: permission: cannot open an ICMP socket"
    assert status_of(kube)["lastRun"]["errors"] == [line]
    (event,) = [e for e in kube.events if e["reason"] == "RunErrors"]
    assert event["message"] == line


def test_unreachable_target_and_confirmed_change_post_events_and_count(
    pushgateway: RecordingPushgateway,
) -> None:
    kube = FakeKube()
    kube.put(probe_body())
    verb = reader(kube, pushgateway)
    verb.handle_pod(finished("p1", TS, path=A1))
    verb.handle_pod(finished("p2", TS + 300, path=A2))
    verb.handle_pod(finished("p3", TS + 600, path=A2))  # confirmRuns 2: a change now
    assert event_reasons(kube) == ["PathChanged"]
    assert "ttl 2: 10.1.2.1 -> 10.2.2.1" in kube.events[0]["message"]
    assert kube.events[0]["involvedObject"]["uid"] == "uid-edge"
    metrics = verb.ctx.metrics
    assert sample(metrics, "traceroute_operator_path_changes_total", namespace="net", probe="edge")
    assert f'traceroute_path_changes_total{{target="{TARGET}"}} 1' in pushgateway.requests[-1][2]
    verb.handle_pod(finished("p4", TS + 900, path=A2[:2], reached=False, code=1))
    assert event_reasons(kube)[-1] == "TargetUnreachable"
    assert sample(metrics, "traceroute_operator_runs_total", outcome="unreachable") == 1


def test_a_failed_verdict_push_is_counted_not_raised(pushgateway: RecordingPushgateway) -> None:
    kube = FakeKube()
    kube.put(probe_body())
    pushgateway.status = 503
    verb = reader(kube, pushgateway)
    verb.handle_pod(finished("p1", TS))
    assert status_of(kube)["lastRun"]["podUID"] == "p1"
    assert sample(verb.ctx.metrics, "traceroute_operator_errors_total", stage="pushgateway") == 1


def test_only_finished_probe_pods_are_read() -> None:
    running = pod("p1", {}, phase="Running")
    assert FinishedPod.from_pod(running, Clock()) is None
    unlabelled = finished("p1", TS)
    del unlabelled["metadata"]["labels"]["traceroute.dev/probe"]
    assert FinishedPod.from_pod(unlabelled, Clock()) is None
    without_uid_label = finished("p1", TS)
    del without_uid_label["metadata"]["labels"]["traceroute.dev/probe-uid"]
    parsed = FinishedPod.from_pod(without_uid_label, Clock())
    assert parsed is not None and parsed.probe.uid is None and parsed.report is not None


@pytest.mark.parametrize(
    ("reached", "code", "outcome"),
    [
        (False, 0, "unreachable"),  # the probe measured an outage: exit 0 (issue 11)
        (False, 1, "unreachable"),  # older probes exited 1 for it
        (True, 0, "reached"),
        (True, 1, "reached"),
        (True, 4, "failed"),
        (True, 5, "failed"),
    ],
)
def test_the_run_outcome_reads_an_unreachable_target_as_measured(
    reached: bool, code: int, outcome: str
) -> None:
    report = parse_termination_message(message(TS, reached=reached, code=code))
    assert _run_outcome(report) == outcome
