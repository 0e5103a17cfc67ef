"""Status of a TracerouteProbe: kstatus conditions and what the runs found (pure functions).

kstatus reads ``observedGeneration`` against ``metadata.generation`` and the abnormal-true
conditions ``Reconciling``/``Stalled``; ``Ready`` is the normal-true summary. ``Reachable``
and ``PathStable`` describe the network, not the operator, and never block readiness.
``RunsStarted`` says whether the CronJob's runs start at all (a pod stuck on its image, its
scheduling or a missing Secret, a Job past its deadline): False makes Ready False and
Stalled True with the pod's reason, so kstatus and Argo CD see it; it is reset to Unknown
by a new spec (which may be the fix) and set True by the next run that started.
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
RUN_TIME_PRECISION_SECONDS = 1.0  # Kubernetes timestamps (startedAt) have whole seconds
TRUNCATION_MARK = "..."  # how the probe ends a shortened error text (contract.py)


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


RUNS_STARTED = "RunsStarted"
CONDITION_ORDER = (
    "Ready",
    "Reconciling",
    "Stalled",
    RUNS_STARTED,
    "Reachable",
    "PathStable",
    "MonitoringReady",
)


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
        kstatus = (
            ("True", *_in_place(outcome.suspended, outcome.cronjob_name)),
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
    starts = condition({"conditions": conditions}, RUNS_STARTED)
    if starts is None or (
        starts.get("status") == "False" and starts.get("observedGeneration") != generation
    ):
        # a new spec may be the fix: only a run of it can tell
        conditions = set_condition(
            conditions,
            RUNS_STARTED,
            "Unknown",
            "AwaitingRun",
            "no run of this spec has started yet",
            generation,
            now,
        )
    if outcome.error is None:
        conditions = with_run_starts(
            conditions, outcome.suspended, outcome.cronjob_name, generation, now
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


def _in_place(suspended: bool, cronjob_name: str | None) -> tuple[str, str]:
    """(reason, message) of Ready=True."""
    if suspended:
        return "Suspended", "the CronJob is in place; runs are suspended"
    return "CronJobReady", f"CronJob {cronjob_name} is in place"


def with_run_starts(
    conditions: list[dict[str, Any]],
    suspended: bool,
    cronjob_name: str | None,
    generation: int | None,
    now: float,
) -> list[dict[str, Any]]:
    """Ready and Stalled once the CronJob is in place: False/True while runs do not start.

    Only when the last reconcile succeeded (``Reconciling`` reason ``Reconciled``); an
    invalid spec or a failing apply keeps the Ready/Stalled it wrote.
    """
    reconciling = condition({"conditions": conditions}, "Reconciling")
    if reconciling is None or reconciling.get("reason") != "Reconciled":
        return conditions
    starts = condition({"conditions": conditions}, RUNS_STARTED)
    if starts is not None and starts.get("status") == "False" and not suspended:
        reason = str(starts.get("reason") or "RunsNotStarting")
        message = f"runs do not start: {starts.get('message', '')}"
        conditions = set_condition(conditions, "Ready", "False", reason, message, generation, now)
        return set_condition(conditions, "Stalled", "True", reason, message, generation, now)
    conditions = set_condition(
        conditions, "Ready", "True", *_in_place(suspended, cronjob_name), generation, now
    )
    return set_condition(conditions, "Stalled", "False", "Reconciled", "", generation, now)


def run_not_started(
    old: Mapping[str, Any] | None, suspended: bool, reason: str, message: str, now: float
) -> Status:
    """Status after seeing a run that cannot start (``reason``: the kubelet's, the
    scheduler's or the Job controller's, e.g. ImagePullBackOff, Unschedulable)."""
    status: Status = copy.deepcopy(dict(old or {}))
    generation = status.get("observedGeneration")
    gen = generation if isinstance(generation, int) else None
    conditions = set_condition(
        list(status.get("conditions") or []), RUNS_STARTED, "False", reason, message, gen, now
    )
    status["conditions"] = with_run_starts(
        conditions, suspended, status.get("cronJobName"), gen, now
    )
    return status


def _run_started(
    conditions: list[dict[str, Any]],
    spec: ProbeSpec,
    *,
    cronjob_name: Any,
    ref: RunRef,
    not_started: tuple[str, str] | None,
    gen: int | None,
    now: float,
) -> list[dict[str, Any]]:
    """RunsStarted from a finished pod, and Ready/Stalled to match."""
    if not_started is None:
        conditions = set_condition(
            conditions, RUNS_STARTED, "True", "Started", f"pod {ref.pod_name} ran", gen, now
        )
    else:
        conditions = set_condition(conditions, RUNS_STARTED, "False", *not_started, gen, now)
    name = cronjob_name if isinstance(cronjob_name, str) else None
    return with_run_starts(conditions, spec.suspend, name, gen, now)


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
    """Top-level fields for the printer columns, recomputed from the current targets only.

    Each field is set or removed on every write: a field kept from before would describe
    targets no longer in the spec (e.g. CHANGES 0 beside a LAST CHANGE of a removed target).
    """
    targets = [t for t in status.get("targets") or [] if isinstance(t, Mapping)]
    if any("reached" in t for t in targets):
        status["hops"] = ",".join(
            str(t["hops"]) if isinstance(t.get("hops"), int) else "?" for t in targets
        )[:512]
        status["reached"] = f"{sum(1 for t in targets if t.get('reached') is True)}/{len(targets)}"
    else:
        status.pop("hops", None)
        status.pop("reached", None)
    status["pathChanges"] = sum(
        t.get("pathChanges", 0) for t in targets if isinstance(t.get("pathChanges"), int)
    )
    changes = [parse_iso(t.get("lastChangeTime")) for t in targets]
    latest = max((c for c in changes if c is not None), default=None)
    if latest is None:
        status.pop("lastChangeTime", None)
    else:
        status["lastChangeTime"] = iso(latest)
    reason = summary_reason(status)
    if reason is None:
        status.pop("reason", None)
    else:
        status["reason"] = reason


def summary_reason(status: Mapping[str, Any]) -> str | None:
    """The REASON column: why the probe is not simply working, else Ready's reason.

    The first that holds: Stalled=True (the rule that refused the spec), Reconciling=True,
    Ready not True; then a last run that left no result; else Ready's reason.
    """
    for type_, abnormal in (("Stalled", "True"), ("Reconciling", "True")):
        entry = condition(status, type_)
        if entry is not None and entry.get("status") == abnormal and entry.get("reason"):
            return str(entry["reason"])[:128]
    ready = condition(status, "Ready")
    if ready is None or not ready.get("reason"):
        return None
    if ready.get("status") == "True":
        reachable = condition(status, "Reachable")
        if reachable is not None and reachable.get("reason") == "NoResult":
            return "RunFailed"
    return str(ready["reason"])[:128]


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
    # a run without result is timed by the kubelet's startedAt, whole seconds: a run that
    # started in the same second as the last one read is newer, not a replay
    return last_time is None or run_time >= last_time - RUN_TIME_PRECISION_SECONDS


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
    not_started: tuple[str, str] | None = None,
) -> RunUpdate:
    """Status after reading one run: per-target results, detection, Reachable/PathStable,
    RunsStarted.

    ``report`` None means the pod left no usable result (``failure`` says why);
    ``not_started`` (reason, message): its container never ran.
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
    conditions = _run_started(
        conditions,
        spec,
        cronjob_name=status.get("cronJobName"),
        ref=ref,
        not_started=not_started,
        gen=gen,
        now=now,
    )
    status["conditions"] = conditions
    _summarize(status)
    return update


def _run_errors(report: RunReport | None, failure: str | None) -> list[str]:
    """Each error once: the probe lists a target's error among the run's errors too."""
    errors: list[str] = []
    if failure:
        errors.append(failure)
    if report is not None:
        errors.extend(report.errors)
        for target in report.targets:
            line = f"{target.name}: {target.error}" if target.error else None
            if line and not any(_same_error(line, e) for e in report.errors):
                errors.append(line)
    return list(dict.fromkeys(errors))


def _same_error(a: str, b: str) -> bool:
    """The same line, also when the probe shortened one copy ("..." at the cut)."""
    stem_a, stem_b = a.removesuffix(TRUNCATION_MARK), b.removesuffix(TRUNCATION_MARK)
    if a.endswith(TRUNCATION_MARK) and stem_b.startswith(stem_a):
        return True
    return (b.endswith(TRUNCATION_MARK) and stem_a.startswith(stem_b)) or a == b


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
