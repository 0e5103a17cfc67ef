"""Read a run's result from a finished probe pod, once, and fold it into the probe's status.

The pod is parsed at the edge (``FinishedPod``); folding it in is a status
read-modify-write whose decision is typed (``RunApplied`` or ``RunSkipped``); what follows
an applied run (metrics, Events, the path-change verdict pushed to the Pushgateway) reads
only that decision.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from traceroute_probe.contract import MEASURED_EXIT_CODES

from .context import OperatorContext
from .naming import CONTAINER_NAME, LABEL_PROBE, LABEL_PROBE_UID
from .pending import waiting_problem
from .pushgateway import PushgatewayError, operator_endpoint, push_verdict, verdict_exposition
from .pushgateway_policy import effective_pushgateway
from .ref import ProbeRef
from .results import ResultError, RunReport, log_lines, parse_termination_message
from .spec import ProbeSpec, SpecError
from .status import RunRef, RunUpdate, apply_run, is_new_run, parse_iso

log = logging.getLogger("traceroute_operator")

SEEN_PODS_LIMIT = 20_000

# label values of traceroute_operator_runs_skipped_total
SkipReason = Literal["already_read", "uid_mismatch", "probe_gone", "invalid_spec"]


@dataclass(frozen=True)
class FinishedPod:
    """What a finished probe pod says about its run."""

    probe: ProbeRef  # uid from the pod's probe-uid label; None on pods without it
    run: RunRef
    run_time: float
    exit_code: int | None
    report: RunReport | None  # None: no usable result, ``failure`` says why
    failure: str | None
    not_started: tuple[str, str] | None  # (reason, message): its container never ran

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any], clock: Callable[[], float]) -> FinishedPod | None:
        """None for a pod that is not a finished probe pod of a probe."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        probe_name = labels.get(LABEL_PROBE)
        namespace = meta.get("namespace")
        pod_uid = meta.get("uid")
        pod_status = pod.get("status") or {}
        if not probe_name or not namespace or not pod_uid:
            return None
        if pod_status.get("phase") not in ("Succeeded", "Failed"):
            return None
        terminated: Mapping[str, Any] = {}
        for container in pod_status.get("containerStatuses") or []:
            if container.get("name") == CONTAINER_NAME:
                terminated = (container.get("state") or {}).get("terminated") or {}
        exit_code = terminated.get("exitCode")
        report: RunReport | None = None
        failure: str | None = None
        try:
            report = parse_termination_message(terminated.get("message"))
            run_time = report.timestamp
        except ResultError as exc:
            reason = terminated.get("reason") or pod_status.get("reason") or "unknown"
            # FallbackToLogsOnError: a probe that failed early left its stderr line instead
            said = "; ".join(log_lines(terminated.get("message")))
            failure = (
                f"run left no result (exit code {exit_code}, reason {reason}): {said}"
                if said
                else f"run left no result ({exc}; exit code {exit_code}, reason {reason})"
            )
            run_time = (
                parse_iso(terminated.get("startedAt"))
                or parse_iso(pod_status.get("startTime"))
                or parse_iso(meta.get("creationTimestamp"))
                or clock()
            )
        job_name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        not_started = None
        if report is None and not terminated:
            # its container never ran: still waiting (e.g. on its image) when the deadline
            # came, or refused by the kubelet at admission
            reason, why = waiting_problem(pod_status) or (
                str(pod_status.get("reason") or "NotStarted"),
                str(pod_status.get("message") or "the container never ran"),
            )
            not_started = (reason, f"pod {meta.get('name', '')}: {why}")
        return cls(
            probe=ProbeRef(namespace, probe_name, labels.get(LABEL_PROBE_UID) or None),
            run=RunRef(job_name=job_name, pod_name=meta.get("name", ""), pod_uid=pod_uid),
            run_time=run_time,
            exit_code=exit_code if isinstance(exit_code, int) else None,
            report=report,
            failure=failure,
            not_started=not_started,
        )


@dataclass(frozen=True)
class RunApplied:
    """The run is in the status: what the rest of the verb tells about it."""

    probe: ProbeRef  # as read back (with its uid)
    spec: ProbeSpec
    update: RunUpdate


@dataclass(frozen=True)
class RunSkipped:
    reason: SkipReason


class SeenPods:
    """Pods already read (bounded: the oldest are forgotten first)."""

    def __init__(self, limit: int = SEEN_PODS_LIMIT) -> None:
        self._uids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._guard = threading.Lock()
        self._limit = limit

    def __contains__(self, pod_uid: str) -> bool:
        with self._guard:
            return pod_uid in self._uids

    def add(self, pod_uid: str) -> None:
        with self._guard:
            self._uids[pod_uid] = None
            while len(self._uids) > self._limit:
                self._uids.popitem(last=False)


class RunReader:
    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self.seen = SeenPods()

    def handle_pod(self, pod: Mapping[str, Any]) -> None:
        """Read a finished probe pod's result once and fold it into the probe's status."""
        finished = FinishedPod.from_pod(pod, self.ctx.clock)
        if finished is None or finished.run.pod_uid in self.seen:
            return
        decision: RunApplied | RunSkipped = RunSkipped("probe_gone")

        def mutate(current: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal decision
            decision = self._decide(current, finished)
            return decision.update.status if isinstance(decision, RunApplied) else None

        with self.ctx.locks.hold(finished.probe):
            written = self.ctx.status.write(finished.probe, mutate)
        self.seen.add(finished.run.pod_uid)
        if written is None or not isinstance(decision, RunApplied):
            reason = decision.reason if isinstance(decision, RunSkipped) else "probe_gone"
            self.ctx.metrics.runs_skipped.labels(reason).inc()
            return
        self._after_run(written, finished, decision)

    def _decide(self, current: Mapping[str, Any], finished: FinishedPod) -> RunApplied | RunSkipped:
        meta = current.get("metadata") or {}
        if finished.probe.uid and meta.get("uid") != finished.probe.uid:
            return RunSkipped("uid_mismatch")  # a pod of an earlier probe of that name
        if meta.get("deletionTimestamp"):
            return RunSkipped("probe_gone")
        if not is_new_run(current.get("status"), finished.run, finished.run_time):
            return RunSkipped("already_read")
        try:
            spec = ProbeSpec.from_dict(current.get("spec"))
        except SpecError:
            return RunSkipped("invalid_spec")
        update = apply_run(
            current.get("status"),
            spec,
            finished.run,
            run_time=finished.run_time,
            exit_code=finished.exit_code,
            report=finished.report,
            failure=finished.failure,
            now=self.ctx.clock(),
            not_started=finished.not_started,
        )
        return RunApplied(ProbeRef.from_body(current), spec, update)

    def _after_run(
        self, written: Mapping[str, Any], finished: FinishedPod, applied: RunApplied
    ) -> None:
        self.ctx.metrics.runs.labels(_run_outcome(finished.report)).inc()
        probe, update = applied.probe, applied.update
        for change in update.changes:
            self.ctx.metrics.path_changes.labels(probe.namespace, probe.name).inc()
            log.warning(
                "%s/%s: path to %s changed: %s",
                probe.namespace,
                probe.name,
                change.target,
                change.describe(),
            )
            self.ctx.events.post(
                probe, "PathChanged", f"target {change.target}: {change.describe()}"
            )
        if update.newly_unreachable:
            self.ctx.events.post(
                probe,
                "TargetUnreachable",
                "not reached in the last run: " + ", ".join(update.newly_unreachable),
            )
        if update.new_errors:
            reason = "RunFailed" if finished.failure else "RunErrors"
            self.ctx.events.post(probe, reason, "; ".join(update.new_errors))
        if finished.report is not None:
            self._push_verdict(probe, applied.spec, (written.get("status") or {}).get("targets"))

    def _push_verdict(self, probe: ProbeRef, spec: ProbeSpec, targets: Any) -> None:
        try:
            pushgateway = effective_pushgateway(spec, self.ctx.config, probe)
            endpoint = operator_endpoint(
                self.ctx.kube, self.ctx.config, probe.namespace, pushgateway
            )
            push_verdict(
                endpoint,
                probe.namespace,
                probe.name,
                verdict_exposition(targets or [], spec.metric_labels),
            )
        except (PushgatewayError, OSError) as exc:
            # the next run pushes the counter again; the status keeps the truth meanwhile
            self.ctx.metrics.errors.labels("pushgateway").inc()
            log.warning(
                "%s/%s: pushing the path-change verdict failed: %s",
                probe.namespace,
                probe.name,
                exc,
            )


def _run_outcome(report: RunReport | None) -> str:
    """Label value of traceroute_operator_runs_total. An unreachable target is what the
    run measured (the probe exits 0 for it; 1 from older probes), not a failed run."""
    if report is None:
        return "no_result"
    if any(not t.reached for t in report.targets):
        return "unreachable"
    if report.exit_code not in MEASURED_EXIT_CODES:
        return "failed"
    return "reached"
