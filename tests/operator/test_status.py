"""Status: kstatus conditions from the first reconcile, runs folded in, changes counted."""

from __future__ import annotations

from typing import Any

from traceroute_operator.results import RunReport, TargetReport
from traceroute_operator.spec import ProbeSpec
from traceroute_operator.status import (
    ReconcileOutcome,
    RunRef,
    apply_run,
    condition,
    is_new_run,
    iso,
    parse_iso,
    reconciled_status,
    run_not_started,
    set_condition,
)

NOW = 1_764_000_000.0
SPEC = ProbeSpec.from_dict(
    {"targets": ["a.example", "b.example"], "expectedHops": 5, "pathChange": {"confirmRuns": 2}}
)


def kstatus(status: dict[str, Any], generation: int) -> str:
    """The kstatus rules for a resource with conditions (as kstatus/Argo read them)."""
    if status.get("observedGeneration") != generation:
        return "InProgress"
    if (c := condition(status, "Stalled")) and c["status"] == "True":
        return "Failed"
    if (c := condition(status, "Reconciling")) and c["status"] == "True":
        return "InProgress"
    ready = condition(status, "Ready")
    return "Current" if ready and ready["status"] == "True" else "InProgress"


def test_first_reconcile_is_kstatus_current() -> None:
    status = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    assert status["observedGeneration"] == 1
    assert status["cronJobName"] == "trp-x"
    assert kstatus(status, 1) == "Current"
    assert kstatus(status, 2) == "InProgress"
    types = [c["type"] for c in status["conditions"]]
    assert types == ["Ready", "Reconciling", "Stalled", "RunsStarted", "Reachable", "PathStable"]
    assert condition(status, "Reachable")["status"] == "Unknown"  # type: ignore[index]
    assert condition(status, "RunsStarted")["reason"] == "AwaitingRun"  # type: ignore[index]
    assert [t["name"] for t in status["targets"]] == ["a.example", "b.example"]
    assert status["targets"][0]["expectedHops"] == 5
    assert status["pathChanges"] == 0


def test_retry_and_stalled() -> None:
    retry = reconciled_status(None, 3, ReconcileOutcome("trp-x", error="HTTP 500"), SPEC, NOW)
    assert kstatus(retry, 3) == "InProgress"
    assert condition(retry, "Reconciling")["status"] == "True"  # type: ignore[index]
    stalled = reconciled_status(
        None, 3, ReconcileOutcome("trp-x", error="spec.port: nope", permanent=True), None, NOW
    )
    assert kstatus(stalled, 3) == "Failed"
    assert "spec.port" in condition(stalled, "Stalled")["message"]  # type: ignore[index]


def test_suspended_is_ready_with_reason() -> None:
    status = reconciled_status(None, 1, ReconcileOutcome("trp-x", suspended=True), SPEC, NOW)
    assert condition(status, "Ready")["reason"] == "Suspended"  # type: ignore[index]
    assert kstatus(status, 1) == "Current"


def test_transition_time_moves_only_on_status_change() -> None:
    first = set_condition([], "Ready", "True", "A", "", 1, NOW)
    same = set_condition(first, "Ready", "True", "B", "m", 2, NOW + 60)
    assert same[0]["lastTransitionTime"] == iso(NOW)
    flipped = set_condition(same, "Ready", "False", "C", "", 2, NOW + 120)
    assert flipped[0]["lastTransitionTime"] == iso(NOW + 120)


def test_monitoring_condition_only_when_generated() -> None:
    off = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    assert condition(off, "MonitoringReady") is None
    missing = reconciled_status(
        off,
        1,
        ReconcileOutcome(
            "trp-x", monitoring_ok=False, monitoring_message="PrometheusRule not served"
        ),
        SPEC,
        NOW,
    )
    assert condition(missing, "MonitoringReady")["status"] == "False"  # type: ignore[index]
    assert kstatus(missing, 1) == "Current"  # monitoring never blocks readiness


def target(
    name: str, path: list[list[str]] | None, reached: bool = True, **kw: Any
) -> TargetReport:
    return TargetReport(
        name=name,
        address=kw.get("address", "10.0.9.9"),
        reached=reached,
        hops=kw.get("hops", len(path or [])),
        path=None if path is None else tuple(frozenset(h) for h in path),
        loss_ratio=kw.get("loss", 0.0),
        rtt_ms=kw.get("rtt", 1.5),
        error=kw.get("error"),
    )


A1 = [["10.0.1.1"], ["10.1.2.1"], ["10.0.9.9"]]
A2 = [["10.0.1.1"], ["10.2.2.1"], ["10.0.9.9"]]
B1 = [["10.0.1.1"], ["10.0.8.8"]]


def run(
    ts: float, *targets: TargetReport, code: int = 0, errors: tuple[str, ...] = ()
) -> RunReport:
    return RunReport(ts, 1.0, code, errors, tuple(targets), False)


def feed(
    status: dict[str, Any],
    ts: float,
    result: RunReport | None,
    uid: str,
    failure: str | None = None,
):
    return apply_run(
        status,
        SPEC,
        RunRef(f"job-{uid}", f"pod-{uid}", uid),
        run_time=ts,
        exit_code=result.exit_code if result else 137,
        report=result,
        failure=failure,
        now=ts + 2,
    )


def test_runs_fill_targets_and_confirm_a_change() -> None:
    status = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    update = feed(
        status, NOW + 300, run(NOW + 300, target("a.example", A1), target("b.example", B1)), "u1"
    )
    status = update.status
    a = status["targets"][0]
    assert a["path"] == A1 and a["hops"] == 3 and a["reached"] is True
    assert status["reached"] == "2/2" and status["hops"] == "3,2"
    assert status["lastRun"]["podUID"] == "u1" and status["lastRun"]["jobName"] == "job-u1"
    assert condition(status, "Reachable")["status"] == "True"  # type: ignore[index]
    assert condition(status, "PathStable")["status"] == "True"  # type: ignore[index]
    assert not update.changes

    update = feed(
        status, NOW + 600, run(NOW + 600, target("a.example", A2), target("b.example", B1)), "u2"
    )
    status = update.status
    assert not update.changes
    assert "ttl 2: 10.1.2.1 -> 10.2.2.1" in status["targets"][0]["pendingChange"]
    assert condition(status, "PathStable")["reason"] == "ChangePending"  # type: ignore[index]

    update = feed(
        status, NOW + 900, run(NOW + 900, target("a.example", A2), target("b.example", B1)), "u3"
    )
    status = update.status
    assert [c.describe() for c in update.changes] == ["ttl 2: 10.1.2.1 -> 10.2.2.1"]
    a = status["targets"][0]
    assert a["pathChanges"] == 1 and a["lastChange"] == "ttl 2: 10.1.2.1 -> 10.2.2.1"
    assert "pendingChange" not in a
    assert status["pathChanges"] == 1
    assert parse_iso(status["lastChangeTime"]) == NOW + 900
    assert condition(status, "PathStable")["status"] == "False"  # type: ignore[index]


def test_unreachable_and_errors_reported_once() -> None:
    status = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    first = feed(
        status,
        NOW,
        run(
            NOW,
            target("a.example", A1),
            target("b.example", [], reached=False, hops=0, error="resolve: NXDOMAIN"),
            code=3,
        ),
        "u1",
    )
    assert first.newly_unreachable == ["b.example"]
    assert first.new_errors == ["b.example: resolve: NXDOMAIN"]
    assert condition(first.status, "Reachable")["status"] == "False"  # type: ignore[index]
    assert first.status["reached"] == "1/2"
    again = feed(
        first.status,
        NOW + 300,
        run(
            NOW + 300,
            target("a.example", A1),
            target("b.example", [], reached=False, hops=0, error="resolve: NXDOMAIN"),
            code=3,
        ),
        "u2",
    )
    assert again.newly_unreachable == [] and again.new_errors == []


def test_pod_without_result() -> None:
    status = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    update = feed(status, NOW, None, "u1", failure="run left no result (OOMKilled)")
    assert update.status["lastRun"]["errors"] == ["run left no result (OOMKilled)"]
    assert update.status["lastRun"]["exitCode"] == 137
    assert condition(update.status, "Reachable")["reason"] == "NoResult"  # type: ignore[index]


def test_unknown_path_keeps_detection_state() -> None:
    status = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    status = feed(status, NOW, run(NOW, target("a.example", A1)), "u1").status
    detection = status["targets"][0]["detection"]
    status = feed(status, NOW + 300, run(NOW + 300, target("a.example", None, hops=3)), "u2").status
    assert "path" not in status["targets"][0]
    assert status["targets"][0]["detection"] == detection


def test_dedupe_by_pod_and_order() -> None:
    status = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    assert is_new_run(status, RunRef("j", "p", "u1"), NOW)
    status = feed(status, NOW, run(NOW, target("a.example", A1)), "u1").status
    assert not is_new_run(status, RunRef("j", "p", "u1"), NOW)  # the same pod again
    assert not is_new_run(status, RunRef("j0", "p0", "u0"), NOW - 300)  # an older pod replayed
    assert is_new_run(status, RunRef("j2", "p2", "u2"), NOW + 300)
    # a pod without result, started in the same second: timed by startedAt (whole seconds)
    later = feed(status, NOW + 0.6, run(NOW + 0.6, target("a.example", A1)), "u3").status
    assert is_new_run(later, RunRef("j4", "p4", "u4"), NOW)


def test_removed_targets_leave_status() -> None:
    status = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    fewer = ProbeSpec.from_dict({"targets": ["b.example"]})
    status = reconciled_status(status, 2, ReconcileOutcome("trp-x"), fewer, NOW)
    assert [t["name"] for t in status["targets"]] == ["b.example"]
    assert "expectedHops" not in status["targets"][0]


def test_a_run_that_cannot_start_makes_the_probe_not_ready_and_stalled() -> None:
    ready = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    stuck = run_not_started(ready, False, "ImagePullBackOff", "pod p1: back-off", NOW + 5)
    starts = condition(stuck, "RunsStarted")
    assert starts is not None and (starts["status"], starts["reason"]) == (
        "False",
        "ImagePullBackOff",
    )
    ready_condition = condition(stuck, "Ready")
    assert ready_condition is not None and ready_condition["status"] == "False"
    assert ready_condition["reason"] == "ImagePullBackOff"
    assert "back-off" in ready_condition["message"]
    assert kstatus(stuck, 1) == "Failed"
    # the resync's reconcile of the same spec keeps saying so
    again = reconciled_status(stuck, 1, ReconcileOutcome("trp-x"), SPEC, NOW + 600)
    assert kstatus(again, 1) == "Failed"
    assert condition(again, "Ready")["reason"] == "ImagePullBackOff"  # type: ignore[index]
    # a run that started clears it
    report = RunReport(NOW + 700, 1.0, 0, errors=(), targets=(), truncated=False)
    started = apply_run(
        again,
        SPEC,
        RunRef("j2", "p2", "u2"),
        run_time=NOW + 700,
        exit_code=0,
        report=report,
        failure=None,
        now=NOW + 702,
    ).status
    assert condition(started, "RunsStarted")["status"] == "True"  # type: ignore[index]
    assert condition(started, "Ready")["reason"] == "CronJobReady"  # type: ignore[index]
    assert kstatus(started, 1) == "Current"


def test_a_new_spec_resets_runs_started_so_a_fix_is_not_reported_failed() -> None:
    ready = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    stuck = run_not_started(ready, False, "ErrImagePull", "pod p1: no such image", NOW + 5)
    fixed = reconciled_status(stuck, 2, ReconcileOutcome("trp-x"), SPEC, NOW + 10)
    assert condition(fixed, "RunsStarted")["reason"] == "AwaitingRun"  # type: ignore[index]
    assert kstatus(fixed, 2) == "Current"


def test_a_suspended_probe_or_a_failing_apply_keeps_its_own_ready() -> None:
    suspended = reconciled_status(None, 1, ReconcileOutcome("trp-x", suspended=True), SPEC, NOW)
    stuck = run_not_started(suspended, True, "Unschedulable", "pod p1: 0/1 nodes", NOW + 5)
    assert condition(stuck, "Ready")["reason"] == "Suspended"  # type: ignore[index]
    retry = reconciled_status(None, 1, ReconcileOutcome("trp-x", error="HTTP 500"), SPEC, NOW)
    stuck = run_not_started(retry, False, "Unschedulable", "pod p1: 0/1 nodes", NOW + 5)
    assert condition(stuck, "Ready")["reason"] == "Retrying"  # type: ignore[index]
    assert condition(stuck, "Stalled")["status"] == "False"  # type: ignore[index]


def _changed_on_a(status: dict[str, Any]) -> dict[str, Any]:
    """Three runs: a.example's path changes (confirmed), b.example is reached throughout."""
    for i, path in enumerate((A1, A2, A2), start=1):
        ts = NOW + 300 * i
        report = run(ts, target("a.example", path), target("b.example", B1))
        status = feed(status, ts, report, f"u{i}").status
    assert status["pathChanges"] == 1 and "lastChangeTime" in status
    return status


def test_a_targets_change_leaves_only_the_current_targets_in_the_summary() -> None:
    status = _changed_on_a(reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW))
    # a.example (the one that changed) removed, c.example added: nothing ran for c yet
    other = ProbeSpec.from_dict({"targets": ["b.example", "c.example"]})
    status = reconciled_status(status, 2, ReconcileOutcome("trp-x"), other, NOW + 1000)
    assert [t["name"] for t in status["targets"]] == ["b.example", "c.example"]
    assert status["hops"] == "2,?" and status["reached"] == "1/2"
    assert status["pathChanges"] == 0
    assert "lastChangeTime" not in status  # CHANGES 0 never beside a LAST CHANGE

    # only never-run targets left: HOPS and REACHED describe nothing, so they are gone
    fresh = ProbeSpec.from_dict({"targets": ["c.example"]})
    status = reconciled_status(status, 3, ReconcileOutcome("trp-x"), fresh, NOW + 1100)
    assert "hops" not in status and "reached" not in status
    assert status["pathChanges"] == 0 and "lastChangeTime" not in status


def test_a_run_after_a_targets_change_summarizes_the_current_targets_only() -> None:
    status = _changed_on_a(reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW))
    # a run of the old CronJob (still tracing a.example) read after the spec dropped it
    only_b = ProbeSpec.from_dict({"targets": ["b.example"]})
    update = apply_run(
        status,
        only_b,
        RunRef("job-u9", "pod-u9", "u9"),
        run_time=NOW + 2000,
        exit_code=0,
        report=run(NOW + 2000, target("a.example", A1), target("b.example", B1)),
        failure=None,
        now=NOW + 2002,
    )
    status = update.status
    assert [t["name"] for t in status["targets"]] == ["b.example"]
    assert status["hops"] == "2" and status["reached"] == "1/1"
    assert status["pathChanges"] == 0 and "lastChangeTime" not in status
    assert not update.changes


def test_a_target_error_the_probe_also_lists_as_a_run_error_appears_once() -> None:
    status = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    long_message = "x" * 300
    # what the probe writes: the target's `e`, and the same line in `err` (contract.py)
    update = feed(
        status,
        NOW,
        run(
            NOW,
            target("a.example", [], reached=False, hops=0, error="permission: " + long_message),
            target("b.example", [], reached=False, hops=0, error="resolve: NXDOMAIN"),
            code=3,
            errors=(
                ("a.example: permission: " + long_message)[:197] + "...",
                "b.example: resolve: NXDOMAIN",
                "push: HTTP 503",
            ),
        ),
        "u1",
    )
    errors = update.status["lastRun"]["errors"]
    assert errors == [
        ("a.example: permission: " + long_message)[:197] + "...",
        "b.example: resolve: NXDOMAIN",
        "push: HTTP 503",
    ]
    assert update.new_errors == errors
    # an older probe that lists target errors only under the target: still reported
    older = feed(
        status,
        NOW,
        run(NOW, target("b.example", [], reached=False, hops=0, error="resolve: NXDOMAIN")),
        "u2",
    )
    assert older.status["lastRun"]["errors"] == ["b.example: resolve: NXDOMAIN"]


def test_the_reason_column_names_what_is_wrong_first() -> None:
    ready = reconciled_status(None, 1, ReconcileOutcome("trp-x"), SPEC, NOW)
    assert ready["reason"] == "CronJobReady"
    suspended = reconciled_status(ready, 2, ReconcileOutcome("trp-x", suspended=True), SPEC, NOW)
    assert suspended["reason"] == "Suspended"
    retrying = reconciled_status(ready, 2, ReconcileOutcome("trp-x", error="HTTP 500"), SPEC, NOW)
    assert retrying["reason"] == "Retrying"
    stalled = reconciled_status(
        ready,
        2,
        ReconcileOutcome(
            "trp-x",
            error="spec.pushgateway.url: not allowed",
            permanent=True,
            stall_reason="PushgatewayURLNotAllowed",
        ),
        SPEC,
        NOW,
    )
    assert stalled["reason"] == "PushgatewayURLNotAllowed"
    # a run that left no result, while the CronJob is fine
    failed = feed(ready, NOW + 300, None, "u1", failure="run left no result (exit code 2)").status
    assert failed["reason"] == "RunFailed"
    # a stall outranks the failed run; a good run clears RunFailed
    assert (
        reconciled_status(
            failed,
            2,
            ReconcileOutcome("trp-x", error="spec.port: nope", permanent=True),
            SPEC,
            NOW,
        )["reason"]
        == "InvalidSpec"
    )
    good = feed(failed, NOW + 600, run(NOW + 600, target("a.example", A1)), "u2").status
    assert good["reason"] == "CronJobReady"
