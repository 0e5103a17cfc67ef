"""Status of a TracerouteProbe: kstatus conditions and what the runs found (pure functions).

kstatus reads ``observedGeneration`` against ``metadata.generation`` and the abnormal-true
conditions ``Reconciling``/``Stalled``; ``Ready`` is the normal-true summary. ``Reachable``
and ``PathStable`` describe the network, not the operator, and never block readiness.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .pathchange import DetectionState, Path, PathChange, Trace, differences, observe
from .results import RunReport, TargetReport
from .spec import ProbeSpec

Status = dict[str, Any]
MAX_MESSAGE = 4096


def iso(timestamp: float) -> str:
    """RFC 3339 UTC with milliseconds (kept precise enough to order runs)."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def set_condition(  # noqa: PLR0917 (mirrors the condition's fields in order)
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: float,
) -> list[dict[str, Any]]:
    """Conditions with ``type_`` set; lastTransitionTime moves only when status changes."""
    result: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None
    for condition in conditions:
        if condition.get("type") == type_:
            previous = condition
        else:
            result.append(dict(condition))
    changed = previous is None or previous.get("status") != status
    entry: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "lastTransitionTime": iso(now)
        if changed or previous is None
        else previous.get("lastTransitionTime", iso(now)),
    }
    if generation is not None:
        entry["observedGeneration"] = generation
    result.append(entry)
    order = {t: i for i, t in enumerate(CONDITION_ORDER)}
    result.sort(key=lambda c: order.get(str(c.get("type")), len(order)))
    return result


CONDITION_ORDER = ("Ready", "Reconciling", "Stalled", "Reachable", "PathStable", "MonitoringReady")


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for entry in status.get("conditions") or []:
        if isinstance(entry, Mapping) and entry.get("type") == type_:
            return entry
    return None


@dataclass(frozen=True)
class ReconcileOutcome:
    """What one reconcile achieved."""

    cronjob_name: str | None
    suspended: bool = False
    error: str | None = None  # None: the CronJob is in place for this generation
    permanent: bool = False  # the error needs a spec change (Stalled), else it is retried
    stall_reason: str = "InvalidSpec"  # Stalled's reason: the rule that refused the spec
    monitoring_ok: bool | None = None  # None: nothing to generate
    monitoring_message: str = ""


def reconciled_status(
    old: Mapping[str, Any] | None,
    generation: int | None,
    outcome: ReconcileOutcome,
    spec: ProbeSpec | None,
    now: float,
) -> Status:
    """Status after a reconcile: conditions and the target list for the current spec."""
    status: Status = copy.deepcopy(dict(old or {}))
    conditions = list(status.get("conditions") or [])
    # (status, reason, message) of Ready, Reconciling and Stalled
    kstatus: tuple[tuple[str, str, str], ...]
    if outcome.error is None:
        status["observedGeneration"] = generation
        ready_reason, ready_message = (
            ("Suspended", "the CronJob is in place; runs are suspended")
            if outcome.suspended
            else ("CronJobReady", f"CronJob {outcome.cronjob_name} is in place")
        )
        kstatus = (
            ("True", ready_reason, ready_message),
            ("False", "Reconciled", ""),
            ("False", "Reconciled", ""),
        )
    elif outcome.permanent:
        # the spec was acted on as far as it can be: observedGeneration says "seen"
        status["observedGeneration"] = generation
        reason = outcome.stall_reason
        kstatus = (
            ("False", reason, outcome.error),
            ("False", reason, ""),
            ("True", reason, outcome.error),
        )
    else:
        kstatus = (
            ("False", "Retrying", outcome.error),
            ("True", "Retrying", outcome.error),
            ("False", "Retrying", ""),
        )
    for type_, (value, reason, message) in zip(
        ("Ready", "Reconciling", "Stalled"), kstatus, strict=True
    ):
        conditions = set_condition(conditions, type_, value, reason, message, generation, now)
    for type_ in ("Reachable", "PathStable"):
        if condition({"conditions": conditions}, type_) is None:
            conditions = set_condition(
                conditions, type_, "Unknown", "NoRunYet", "no run finished yet", None, now
            )
    if outcome.monitoring_ok is not None:
        conditions = set_condition(
            conditions,
            "MonitoringReady",
            "True" if outcome.monitoring_ok else "False",
            "Generated" if outcome.monitoring_ok else "NotGenerated",
            outcome.monitoring_message,
            generation,
            now,
        )
    else:
        conditions = [c for c in conditions if c.get("type") != "MonitoringReady"]
    status["conditions"] = conditions
    if outcome.cronjob_name:
        status["cronJobName"] = outcome.cronjob_name
    if spec is not None:
        status["targets"] = _targets_for_spec(status.get("targets"), spec)
    _summarize(status)
    return status


def _targets_for_spec(raw: Any, spec: ProbeSpec) -> list[dict[str, Any]]:
    """Target entries in spec order: removed targets dropped, new ones added empty."""
    existing = {
        t.get("name"): dict(t) for t in (raw or []) if isinstance(t, Mapping) and t.get("name")
    }
    entries = []
    for name in spec.targets:
        entry = existing.get(name, {"name": name, "pathChanges": 0})
        expected = spec.expected_hops_for(name)
        if expected is None:
            entry.pop("expectedHops", None)
        else:
            entry["expectedHops"] = expected
        entries.append(entry)
    return entries


def _summarize(status: Status) -> None:
    """Top-level fields for the printer columns."""
    targets = [t for t in status.get("targets") or [] if isinstance(t, Mapping)]
    ran = [t for t in targets if "reached" in t]
    if ran:
        status["hops"] = ",".join(
            str(t["hops"]) if isinstance(t.get("hops"), int) else "?" for t in targets
        )[:512]
        status["reached"] = f"{sum(1 for t in targets if t.get('reached') is True)}/{len(targets)}"
    status["pathChanges"] = sum(
        t.get("pathChanges", 0) for t in targets if isinstance(t.get("pathChanges"), int)
    )
    changes = [parse_iso(t.get("lastChangeTime")) for t in targets]
    latest = max((c for c in changes if c is not None), default=None)
    if latest is not None:
        status["lastChangeTime"] = iso(latest)


@dataclass(frozen=True)
class RunRef:
    """Which pod a result came from (each is read once)."""

    job_name: str | None
    pod_name: str
    pod_uid: str


@dataclass
class RunUpdate:
    status: Status
    changes: list[PathChange] = field(default_factory=list)
    newly_unreachable: list[str] = field(default_factory=list)
    new_errors: list[str] = field(default_factory=list)


def is_new_run(status: Mapping[str, Any] | None, ref: RunRef, run_time: float) -> bool:
    """False for a pod already read, or one older than the last run read (replayed watch)."""
    last = (status or {}).get("lastRun")
    if not isinstance(last, Mapping):
        return True
    if last.get("podUID") == ref.pod_uid:
        return False
    last_time = parse_iso(last.get("startTime"))
    return last_time is None or run_time >= last_time - 0.0005


def apply_run(
    old: Mapping[str, Any] | None,
    spec: ProbeSpec,
    ref: RunRef,
    *,
    run_time: float,
    exit_code: int | None,
    report: RunReport | None,
    failure: str | None,
    now: float,
) -> RunUpdate:
    """Status after reading one run: per-target results, detection, Reachable/PathStable.

    ``report`` None means the pod left no usable result (``failure`` says why).
    """
    status: Status = copy.deepcopy(dict(old or {}))
    status["targets"] = _targets_for_spec(status.get("targets"), spec)
    previous_errors = list((status.get("lastRun") or {}).get("errors") or [])
    errors = _run_errors(report, failure)
    status["lastRun"] = _last_run(ref, run_time, exit_code, report, errors)
    status["lastRunTime"] = iso(run_time)
    update = RunUpdate(status)
    update.new_errors = [e for e in errors if e not in previous_errors]
    conditions = list(status.get("conditions") or [])
    generation = status.get("observedGeneration")
    gen = generation if isinstance(generation, int) else None

    if report is None:
        conditions = set_condition(
            conditions, "Reachable", "Unknown", "NoResult", failure or "no result", gen, now
        )
    else:
        unreachable, pending = _fold_targets(status["targets"], report, spec, run_time, update)
        conditions = _reachable(conditions, unreachable, gen, now)
        conditions = _path_stable(conditions, update.changes, pending, gen, now)
    status["conditions"] = conditions
    _summarize(status)
    return update


def _run_errors(report: RunReport | None, failure: str | None) -> list[str]:
    errors: list[str] = []
    if failure:
        errors.append(failure)
    if report is not None:
        errors.extend(report.errors)
        for target in report.targets:
            if target.error:
                errors.append(f"{target.name}: {target.error}")
    return errors


def _last_run(
    ref: RunRef,
    run_time: float,
    exit_code: int | None,
    report: RunReport | None,
    errors: list[str],
) -> dict[str, Any]:
    last_run: dict[str, Any] = {
        "podName": ref.pod_name,
        "podUID": ref.pod_uid,
        "startTime": iso(run_time),
        "errors": [e[:1024] for e in errors[:70]],
    }
    if ref.job_name:
        last_run["jobName"] = ref.job_name
    if exit_code is not None:
        last_run["exitCode"] = exit_code
    if report is not None:
        last_run["durationSeconds"] = round(report.duration, 3)
        last_run["truncated"] = report.truncated
    return last_run


def _fold_targets(
    entries: list[dict[str, Any]],
    report: RunReport,
    spec: ProbeSpec,
    run_time: float,
    update: RunUpdate,
) -> tuple[list[str], list[str]]:
    """Fold the run into each target's entry; (unreachable, change pending) target names."""
    unreachable: list[str] = []
    pending: list[str] = []
    for entry in entries:
        target = report.target(entry["name"])
        if target is None:
            continue
        was_reached = entry.get("reached")
        _apply_target(entry, target, run_time)
        if not target.reached:
            unreachable.append(target.name)
            if was_reached is not False:
                update.newly_unreachable.append(target.name)
        if target.path is None:
            continue
        changing = _detect(
            entry,
            target,
            target.path,
            confirm_runs=spec.confirm_runs,
            run_time=run_time,
            update=update,
        )
        if changing:
            pending.append(target.name)
    return unreachable, pending


def _detect(
    entry: dict[str, Any],
    target: TargetReport,
    path: Path,
    *,
    confirm_runs: int,
    run_time: float,
    update: RunUpdate,
) -> bool:
    """ECMP-aware change detection on one target; True while a change awaits confirmation."""
    state = DetectionState.from_status(entry.get("detection"))
    state, change = observe(
        state,
        Trace(path, target.hops, target.reached, target.hops_min),
        confirm_runs,
        target.name,
    )
    entry["detection"] = state.to_status()
    if change is not None:
        update.changes.append(change)
        entry["pathChanges"] = int(entry.get("pathChanges") or 0) + 1
        entry["lastChangeTime"] = iso(run_time)
        entry["lastChange"] = change.describe()[:MAX_MESSAGE]
    if state.candidate is None:
        entry.pop("pendingChange", None)
        return False
    assert state.baseline is not None
    diff = "; ".join(differences(state.baseline, state.candidate))
    awaiting = f"{diff} (seen in {state.candidate_runs} of {confirm_runs} runs)"
    entry["pendingChange"] = awaiting[:MAX_MESSAGE]
    return True


def _reachable(
    conditions: list[dict[str, Any]], unreachable: list[str], gen: int | None, now: float
) -> list[dict[str, Any]]:
    if unreachable:
        return set_condition(
            conditions,
            "Reachable",
            "False",
            "TargetsUnreachable",
            "not reached in the last run: " + ", ".join(unreachable),
            gen,
            now,
        )
    return set_condition(
        conditions, "Reachable", "True", "AllReached", "every target reached", gen, now
    )


def _path_stable(
    conditions: list[dict[str, Any]],
    changes: list[PathChange],
    pending: list[str],
    gen: int | None,
    now: float,
) -> list[dict[str, Any]]:
    if changes:
        return set_condition(
            conditions,
            "PathStable",
            "False",
            "PathChanged",
            "; ".join(f"{c.target}: {c.describe()}" for c in changes),
            gen,
            now,
        )
    if pending:
        return set_condition(
            conditions,
            "PathStable",
            "Unknown",
            "ChangePending",
            "a different path awaits confirmation: " + ", ".join(pending),
            gen,
            now,
        )
    return set_condition(
        conditions, "PathStable", "True", "PathUnchanged", "no confirmed change", gen, now
    )


def _apply_target(entry: dict[str, Any], target: TargetReport, run_time: float) -> None:
    entry["reached"] = target.reached
    entry["hops"] = target.hops
    if target.hops_min is None:
        entry.pop("hopsMin", None)
    else:
        entry["hopsMin"] = target.hops_min
    entry["lastRunTime"] = iso(run_time)
    for key, value in (
        ("address", target.address),
        ("destinationLossRatio", target.loss_ratio),
        ("destinationRTTMilliseconds", target.rtt_ms),
        ("error", target.error),
    ):
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    if target.path is None:
        entry.pop("path", None)
    else:
        entry["path"] = [sorted(hop) for hop in target.path]
