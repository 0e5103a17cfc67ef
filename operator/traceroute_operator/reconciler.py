"""What the operator does for a TracerouteProbe, independent of kopf: one object per verb.

The kopf handlers (handlers.py) call ``ProbeReconciler``, which only wires the verbs to
one shared context (context.py):

- ``apply.ChildApplier``: reconcile a probe (CronJob, its PrometheusRule, status);
- ``runs.RunReader``: read a finished pod's result into the status, Events, the verdict;
- ``pending.PendingRuns``: a run whose pod cannot start (or whose Job ran out of time);
- ``shared.SharedMonitoring``: the ServiceMonitor and dashboards all probes share;
- ``cleanup.Cleanup``: what a deleted probe leaves outside owner-reference reach;
- ``drift.CronJobDrift``: a CronJob deleted or edited by someone else comes back.

Everything is plain synchronous code on the official client (it runs in kopf's thread pool).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .apply import ChildApplier
from .cleanup import Cleanup
from .config import OperatorConfig
from .context import OperatorContext
from .drift import CronJobDrift
from .kube import Kube
from .metrics import OperatorMetrics
from .pending import PendingRuns
from .runs import RunReader
from .shared import SharedMonitoring


class ProbeReconciler:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = OperatorContext.create(kube, config, metrics or OperatorMetrics(), clock)
        self.shared = SharedMonitoring(self.ctx)
        self.children = ChildApplier(self.ctx, self.shared)
        self.runs = RunReader(self.ctx)
        self.pending = PendingRuns(self.ctx)
        self.deletion = Cleanup(self.ctx, self.shared)
        self.drift = CronJobDrift(self.ctx, self.children)

    @property
    def managed_probes(self) -> int:
        return len(self.ctx.managed)

    def reconcile(self, body: Mapping[str, Any]) -> None:
        """Make the CronJob and monitoring objects match the spec; write kstatus status."""
        self.children.reconcile(body)

    def handle_pod(self, pod: Mapping[str, Any]) -> None:
        self.runs.handle_pod(pod)

    def handle_pending_pod(self, pod: Mapping[str, Any]) -> None:
        self.pending.handle_pod(pod)

    def handle_job(self, job: Mapping[str, Any]) -> None:
        self.pending.handle_job(job)

    def handle_cronjob(self, event_type: str | None, cronjob: Mapping[str, Any]) -> None:
        self.drift.handle_cronjob(event_type, cronjob)

    def cleanup(self, body: Mapping[str, Any], give_up: bool = False) -> None:
        self.deletion.cleanup(body, give_up)
