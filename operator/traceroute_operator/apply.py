"""Reconcile: make a probe's CronJob and monitoring objects match its spec; kstatus status.

The body is parsed once here (ProbeRef, ProbeSpec) and the builders get the typed values.
An unusable spec stalls the probe (only a spec change helps); a failed CronJob apply is
retried; monitoring problems only set MonitoringReady=False and post an Event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from .children import desired_objects, shared_objects
from .context import OperatorContext
from .errors import RetryableError
from .kube import KubeError
from .naming import cronjob_name
from .pushgateway_policy import effective_pushgateway
from .ref import ProbeRef
from .shared import SharedMonitoring, apply_monitoring_object
from .spec import ProbeSpec, SpecError
from .status import ReconcileOutcome, condition, reconciled_status
from .trust_review import kube_secret_lookup, review_probe

log = logging.getLogger("traceroute_operator")


class ChildApplier:
    def __init__(self, ctx: OperatorContext, shared: SharedMonitoring) -> None:
        self.ctx = ctx
        self.shared = shared

    def reconcile(self, body: Mapping[str, Any]) -> None:
        started = time.monotonic()
        ref = ProbeRef.from_body(body)
        with self.ctx.locks.hold(ref):
            try:
                self._reconcile_locked(body, ref)
            finally:
                self.ctx.metrics.reconcile_duration.observe(time.monotonic() - started)

    def _reconcile_locked(self, body: Mapping[str, Any], ref: ProbeRef) -> None:
        metrics = self.ctx.metrics
        self.ctx.managed.add(ref)
        try:
            spec = ProbeSpec.from_dict(body.get("spec"))
        except SpecError as exc:
            metrics.reconciles.labels("invalid").inc()
            self._stalled(body, ref, str(exc), spec=None)
            return
        config = self.ctx.config
        pushgateway = effective_pushgateway(spec, config, ref)
        lookup = kube_secret_lookup(self.ctx.kube, ref.namespace)
        if (refusal := review_probe(spec, pushgateway, config, ref.namespace, lookup)) is not None:
            # nothing that mounts, pulls or contacts what the rules refuse is ever created
            metrics.reconciles.labels("invalid").inc()
            self._stalled(body, ref, str(refusal), spec=spec, reason=refusal.reason)
            return
        desired = desired_objects(ref, spec, pushgateway, config)
        try:
            self.ctx.kube.apply(desired.cronjob)
        except KubeError as exc:
            metrics.errors.labels("apply").inc()
            if exc.invalid:
                # the apiserver refused what the spec made (e.g. a bad affinity): only a
                # spec change helps, so do not retry in a loop
                metrics.reconciles.labels("invalid").inc()
                self._stalled(body, ref, f"CronJob rejected: {exc.message}", spec=spec)
                return
            metrics.reconciles.labels("retry").inc()
            message = f"applying CronJob failed: {exc}"
            outcome = ReconcileOutcome(cronjob_name(ref.name), error=message)
            self._write(body, ref, outcome, spec)
            raise RetryableError(message) from exc
        self.ctx.cronjobs.record(ref, desired.cronjob)
        monitoring_ok, monitoring_message = self._apply_monitoring(desired.owned_monitoring)
        outcome = ReconcileOutcome(
            cronjob_name=desired.cronjob["metadata"]["name"],
            suspended=spec.suspend,
            monitoring_ok=monitoring_ok,
            monitoring_message=monitoring_message,
        )
        previous = condition(body.get("status") or {}, "MonitoringReady")
        written = self._write(body, ref, outcome, spec)
        metrics.reconciles.labels("ok").inc()
        if (
            written is not None
            and monitoring_ok is False
            and (previous is None or previous.get("message") != monitoring_message)
        ):
            self.ctx.events.post(ref, "MonitoringNotGenerated", monitoring_message)

    def _write(
        self,
        body: Mapping[str, Any],
        ref: ProbeRef,
        outcome: ReconcileOutcome,
        spec: ProbeSpec | None,
    ) -> dict[str, Any] | None:
        generation = (body.get("metadata") or {}).get("generation")
        return self.ctx.status.write(
            ref,
            lambda cur: reconciled_status(
                cur.get("status"), generation, outcome, spec, self.ctx.clock()
            ),
            body,
        )

    def _stalled(
        self,
        body: Mapping[str, Any],
        ref: ProbeRef,
        message: str,
        spec: ProbeSpec | None,
        reason: str = "InvalidSpec",
    ) -> None:
        log.warning("%s/%s: %s", ref.namespace, ref.name, message)
        outcome = ReconcileOutcome(
            cronjob_name(ref.name), error=message, permanent=True, stall_reason=reason
        )
        previous = condition(body.get("status") or {}, "Stalled")
        self._write(body, ref, outcome, spec)
        if previous is None or previous.get("message") != message:
            event = "InvalidSpec" if reason == "InvalidSpec" else "TrustRefused"
            self.ctx.events.post(ref, event, message)

    def _apply_monitoring(self, owned: list[dict[str, Any]]) -> tuple[bool | None, str]:
        """(MonitoringReady, its message); None when nothing is generated at all."""
        problems = [p for p in (apply_monitoring_object(self.ctx, o) for o in owned) if p]
        shared_ok, shared_message = self.shared.ensure()
        if not owned and not shared_objects(self.ctx.config.monitoring):
            return None, ""
        if shared_message and not shared_ok:
            problems.append(shared_message)
        if problems:
            for problem in problems:
                log.warning("monitoring: %s", problem)
            return False, "; ".join(problems)
        return True, "monitoring objects are in place"
