"""Drift: a probe's CronJob deleted or edited by someone else is restored within seconds.

The operator watches its own CronJobs (label-selected). An event whose CronJob no longer
carries what this process last applied (``AppliedCronJobs``), or a deleted one, makes the
probe reconcile again: one server-side apply puts the CronJob back. Events of the
operator's own applies and of the CronJob controller's status updates match and cost
nothing but the comparison.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from .apply import ChildApplier
from .context import OperatorContext
from .errors import RetryableError
from .naming import API_VERSION, LABEL_PROBE, LABEL_PROBE_UID, PLURAL
from .ref import ProbeRef

log = logging.getLogger("traceroute_operator")

RESTORE_ATTEMPTS = 3
MAX_RESTORE_DELAY = 5.0


def contains(desired: Any, observed: Any) -> bool:
    """Every field of ``desired`` has its value in ``observed`` (which the apiserver may
    have defaulted further): mappings by key, lists element-wise with equal length."""
    if isinstance(desired, Mapping):
        return isinstance(observed, Mapping) and all(
            key in observed and contains(value, observed[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(desired) == len(observed)
            and all(contains(d, o) for d, o in zip(desired, observed, strict=True))
        )
    return bool(desired == observed)


def drifted(applied: Mapping[str, Any], observed: Mapping[str, Any]) -> bool:
    """The observed CronJob lost part of its spec or labels as the operator applied them."""
    applied_labels = (applied.get("metadata") or {}).get("labels") or {}
    observed_labels = (observed.get("metadata") or {}).get("labels") or {}
    return not (
        contains(applied.get("spec") or {}, observed.get("spec") or {})
        and contains(applied_labels, observed_labels)
    )


def owner_of(cronjob: Mapping[str, Any]) -> ProbeRef | None:
    meta = cronjob.get("metadata") or {}
    labels = meta.get("labels") or {}
    name, namespace = labels.get(LABEL_PROBE), meta.get("namespace")
    if not isinstance(name, str) or not name or not isinstance(namespace, str) or not namespace:
        return None
    uid = labels.get(LABEL_PROBE_UID)
    return ProbeRef(namespace, name, uid if isinstance(uid, str) and uid else None)


class CronJobDrift:
    def __init__(self, ctx: OperatorContext, children: ChildApplier) -> None:
        self.ctx = ctx
        self.children = children

    def handle_cronjob(self, event_type: str | None, cronjob: Mapping[str, Any]) -> bool:
        """Restore the probe's CronJob when it was deleted or edited; True when it did."""
        probe = owner_of(cronjob)
        if probe is None:
            return False
        applied = self.ctx.cronjobs.get(probe)
        if applied is None or applied["metadata"]["name"] != cronjob["metadata"].get("name"):
            return False
        if (cronjob.get("metadata") or {}).get("deletionTimestamp"):
            return False  # being deleted: its DELETED event follows
        if event_type != "DELETED" and not drifted(applied, cronjob):
            return False
        body = self.ctx.kube.get(API_VERSION, PLURAL, probe.namespace, probe.name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return False  # the probe is going: its CronJob goes with it
        what = "deleted" if event_type == "DELETED" else "changed"
        log.warning(
            "%s/%s: CronJob %s was %s by someone else: restoring it",
            probe.namespace,
            probe.name,
            applied["metadata"]["name"],
            what,
        )
        self.ctx.metrics.drift_restores.labels(what).inc()
        self._reconcile(body)
        return True

    def _reconcile(self, body: Mapping[str, Any]) -> None:
        # watch-event handlers are not retried by kopf: a few bounded attempts here, then
        # the resync (the status says Reconciling meanwhile, never "in place")
        for attempt in range(RESTORE_ATTEMPTS):
            try:
                self.children.reconcile(body)
                return
            except RetryableError as exc:
                if attempt == RESTORE_ATTEMPTS - 1:
                    log.warning("restoring the CronJob failed, the resync retries: %s", exc)
                    return
                time.sleep(min(exc.delay, MAX_RESTORE_DELAY))
