"""Monitoring objects on the cluster: applying them, and the shared ones' lifetime.

The shared ServiceMonitor and dashboard ConfigMaps serve every probe and live outside
owner-reference reach: applied once (again after each resync period), deleted when the
last TracerouteProbe is gone. Monitoring is best effort: an API error becomes a message
for the MonitoringReady condition, never an exception.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from .children import SWITCH_OF_KIND, shared_objects
from .context import OperatorContext
from .kube import PLURALS, KubeError
from .naming import API_VERSION, PLURAL
from .ref import ProbeRef

log = logging.getLogger("traceroute_operator")


def missing_kind(exc: KubeError) -> bool:
    # 404 for a kind the apiserver does not serve: "the server could not find the requested
    # resource" when the group exists, a plain "404 page not found" when the whole group is
    # missing (no prometheus-operator CRDs at all); a missing namespace says "namespaces ...
    # not found" instead
    return exc.not_found and (
        "could not find the requested resource" in exc.message or "page not found" in exc.message
    )


def apply_monitoring_object(ctx: OperatorContext, obj: Mapping[str, Any]) -> str | None:
    """Apply; None on success, else a message (never raises for API errors)."""
    kind = obj["kind"]
    meta = obj["metadata"]
    try:
        ctx.kube.apply(obj)
    except KubeError as exc:
        ctx.metrics.errors.labels("monitoring").inc()
        if missing_kind(exc):
            return (
                f"{kind} ({obj['apiVersion']}) is not served by this cluster: install the "
                f"prometheus-operator CRDs or set {SWITCH_OF_KIND.get(kind, 'its switch')}"
            )
        return f"{kind} {meta.get('namespace')}/{meta['name']}: {exc.message}"
    return None


class SharedMonitoring:
    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._result: tuple[bool, str] = (True, "")
        self._applied_at: float | None = None  # None: not applied (or released)

    def ensure(self) -> tuple[bool, str]:
        """(ok, problems) of applying the shared objects, cached for one resync period.

        They depend only on the process's settings, so nothing but time can make them stale.
        """
        objects = shared_objects(self.ctx.config.monitoring)
        if not objects:
            return True, ""
        with self._lock:
            period = max(self.ctx.config.resync_seconds, 60)
            if self._applied_at is not None and self.ctx.clock() - self._applied_at < period:
                return self._result
            problems = [p for p in (apply_monitoring_object(self.ctx, o) for o in objects) if p]
            self._result = (not problems, "; ".join(problems))
            self._applied_at = self.ctx.clock()
            return self._result

    def release_if_unused(self, leaving: ProbeRef) -> None:
        """Delete the shared objects unless another (not deleting) probe remains."""
        with self._lock:
            if self._other_probes_remain(leaving):
                return
            for obj in shared_objects(self.ctx.config.monitoring):
                self._delete(obj)
            self._applied_at = None
            log.info("last TracerouteProbe gone: shared monitoring objects removed")

    def _delete(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        plural = PLURALS[obj["kind"]]
        try:
            self.ctx.kube.delete(obj["apiVersion"], plural, meta["namespace"], meta["name"])
        except KubeError as exc:
            if not missing_kind(exc):
                self.ctx.metrics.errors.labels("monitoring").inc()
                log.warning("shared %s %s not deleted: %s", obj["kind"], meta["name"], exc)

    def _other_probes_remain(self, leaving: ProbeRef) -> bool:
        for scope in self.ctx.config.watch_namespaces or (None,):
            for item in self.ctx.kube.list(API_VERSION, PLURAL, scope):
                meta = item.get("metadata") or {}
                if (meta.get("namespace"), meta.get("name")) == leaving.key:
                    continue
                if not meta.get("deletionTimestamp"):
                    return True
        return False
