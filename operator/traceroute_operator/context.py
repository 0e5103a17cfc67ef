"""What every verb shares: the client, settings, metrics, clock, per-probe locks, writers.

The verbs (apply.py, runs.py, cleanup.py, shared.py) run in kopf's thread pool; a
per-probe lock serialises this process's writers of one probe (reconcile, pod results,
resync, cleanup, drift).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .config import OperatorConfig
from .events import EventRecorder
from .kube import Kube
from .metrics import OperatorMetrics
from .ref import ProbeRef
from .status_writer import StatusWriter


class ProbeLocks:
    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, probe: ProbeRef) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(probe.key, threading.Lock())
        with lock:
            yield

    def forget(self, probe: ProbeRef) -> None:
        with self._guard:
            self._locks.pop(probe.key, None)


class AppliedCronJobs:
    """The CronJob this process last applied per probe: what the drift watch restores.

    A probe without an entry (not reconciled by this process yet, or cleaned up) is left
    alone: its next reconcile (resume, update, resync) applies the CronJob anyway.
    """

    def __init__(self) -> None:
        self._cronjobs: dict[tuple[str, str], dict[str, Any]] = {}
        self._guard = threading.Lock()

    def record(self, probe: ProbeRef, cronjob: dict[str, Any]) -> None:
        with self._guard:
            self._cronjobs[probe.key] = cronjob

    def get(self, probe: ProbeRef) -> dict[str, Any] | None:
        with self._guard:
            return self._cronjobs.get(probe.key)

    def forget(self, probe: ProbeRef) -> None:
        with self._guard:
            self._cronjobs.pop(probe.key, None)


class ManagedProbes:
    """The probes this process reconciled and has not cleaned up (the probes gauge)."""

    def __init__(self, metrics: OperatorMetrics) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._metrics = metrics

    def add(self, probe: ProbeRef) -> None:
        self._keys.add(probe.key)
        self._metrics.probes.set(len(self._keys))

    def discard(self, probe: ProbeRef) -> None:
        self._keys.discard(probe.key)
        self._metrics.probes.set(len(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True)
class OperatorContext:
    kube: Kube
    config: OperatorConfig
    metrics: OperatorMetrics
    clock: Callable[[], float]
    locks: ProbeLocks
    managed: ManagedProbes
    status: StatusWriter
    events: EventRecorder
    cronjobs: AppliedCronJobs

    @classmethod
    def create(
        cls,
        kube: Kube,
        config: OperatorConfig,
        metrics: OperatorMetrics,
        clock: Callable[[], float],
    ) -> OperatorContext:
        return cls(
            kube=kube,
            config=config,
            metrics=metrics,
            clock=clock,
            locks=ProbeLocks(),
            managed=ManagedProbes(metrics),
            status=StatusWriter(kube, metrics),
            events=EventRecorder(kube, metrics, clock, socket.gethostname()),
            cronjobs=AppliedCronJobs(),
        )
