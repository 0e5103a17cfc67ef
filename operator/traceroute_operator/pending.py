"""Runs that never start: a probe pod stuck Pending, or a Job past its deadline without a run.

Without this, such a run ends as a Job ``DeadlineExceeded`` while the probe keeps saying
Ready. The operator watches its pods while they are Pending (a container waiting with a
reason other than ``ContainerCreating``, or ``PodScheduled=False``) and its Jobs when they
fail with ``DeadlineExceeded`` (a quota or admission problem leaves no pod at all), and sets
``RunsStarted=False`` with that reason, so Ready turns False and Stalled True (status.py),
plus one ``RunNotStarted`` Warning Event per new reason. The kubelet's reasons pass
through unchanged (ErrImagePull, ImagePullBackOff, CreateContainerConfigError,
Unschedulable, ...): they are what ``kubectl describe pod`` shows too.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .context import OperatorContext
from .naming import LABEL_PROBE, LABEL_PROBE_UID
from .ref import ProbeRef
from .spec import ProbeSpec, SpecError
from .status import RUNS_STARTED, condition, run_not_started

log = logging.getLogger("traceroute_operator")

# waiting reasons of a container that is on its way
STARTING = frozenset({"", "ContainerCreating", "PodInitializing"})
SEEN_LIMIT = 20_000


def pod_start_problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a Pending pod that is not on its way to run, else None."""
    status = pod.get("status") or {}
    if status.get("phase", "Pending") != "Pending":
        return None
    return waiting_problem(status)


def waiting_problem(status: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a container kept from starting, or of a pod not scheduled."""
    for container in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason not in STARTING:
            return reason, str(waiting.get("message") or reason)
    for entry in status.get("conditions") or []:
        if entry.get("type") == "PodScheduled" and entry.get("status") == "False":
            reason = str(entry.get("reason") or "Unschedulable")
            return reason, str(entry.get("message") or "the pod cannot be scheduled")
    return None


def job_start_problem(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a Job that failed on its deadline, else None."""
    for entry in (job.get("status") or {}).get("conditions") or []:
        if (
            entry.get("type") == "Failed"
            and entry.get("status") == "True"
            and entry.get("reason") == "DeadlineExceeded"
        ):
            deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
            return "DeadlineExceeded", (
                f"no run finished within the Job's deadline ({deadline} s): "
                + str(entry.get("message") or "the Job was active past its deadline")
            )
    return None


@dataclass(frozen=True)
class RunNotStarted:
    """A run of a probe that did not start, and why."""

    probe: ProbeRef
    job_name: str | None
    source: str  # "pod <name>" or "Job <name>"
    reason: str
    message: str
    seen_key: str  # object uid and reason: each is handled once

    @classmethod
    def from_object(
        cls, kind: str, obj: Mapping[str, Any], problem: tuple[str, str] | None
    ) -> RunNotStarted | None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        probe_name, namespace, uid = labels.get(LABEL_PROBE), meta.get("namespace"), meta.get("uid")
        if problem is None or not probe_name or not namespace or not uid:
            return None
        name = str(meta.get("name", ""))
        job_name = (
            name
            if kind == "Job"
            else labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        )
        reason, message = problem
        source = f"{'Job' if kind == 'Job' else 'pod'} {name}"
        return cls(
            probe=ProbeRef(namespace, probe_name, labels.get(LABEL_PROBE_UID) or None),
            job_name=job_name,
            source=source,
            reason=reason,
            message=f"{source}: {message}",
            seen_key=f"{uid}/{reason}",
        )


class SeenProblems:
    """(object, reason) pairs already handled (bounded: the oldest are forgotten first)."""

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self._keys: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._guard = threading.Lock()
        self._limit = limit

    def __contains__(self, key: str) -> bool:
        with self._guard:
            return key in self._keys

    def add(self, key: str) -> None:
        with self._guard:
            self._keys[key] = None
            while len(self._keys) > self._limit:
                self._keys.popitem(last=False)


class PendingRuns:
    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self.seen = SeenProblems()

    def handle_pod(self, pod: Mapping[str, Any]) -> None:
        self._handle(RunNotStarted.from_object("Pod", pod, pod_start_problem(pod)))

    def handle_job(self, job: Mapping[str, Any]) -> None:
        self._handle(RunNotStarted.from_object("Job", job, job_start_problem(job)))

    def _handle(self, problem: RunNotStarted | None) -> None:
        if problem is None or problem.seen_key in self.seen:
            return
        previous: Mapping[str, Any] | None = None

        def mutate(current: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal previous
            meta = current.get("metadata") or {}
            if problem.probe.uid and meta.get("uid") != problem.probe.uid:
                return None  # a run of an earlier probe of that name
            if meta.get("deletionTimestamp"):
                return None
            status = current.get("status") or {}
            last_job = (status.get("lastRun") or {}).get("jobName")
            if problem.job_name and last_job == problem.job_name:
                return None  # that run's pod was read: it did start
            try:
                spec = ProbeSpec.from_dict(current.get("spec"))
            except SpecError:
                return None  # Stalled on its spec already
            previous = condition(status, RUNS_STARTED)
            return run_not_started(
                status, spec.suspend, problem.reason, problem.message, self.ctx.clock()
            )

        with self.ctx.locks.hold(problem.probe):
            written = self.ctx.status.write(problem.probe, mutate)
        self.seen.add(problem.seen_key)
        if written is None:
            return
        if (
            previous is None
            or previous.get("status") != "False"
            or previous.get("reason") != problem.reason
        ):
            log.warning(
                "%s/%s: run does not start: %s",
                problem.probe.namespace,
                problem.probe.name,
                problem.message,
            )
            self.ctx.events.post(
                problem.probe, "RunNotStarted", f"{problem.reason}: {problem.message}"
            )
