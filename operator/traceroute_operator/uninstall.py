"""Taking the operator away without stranding probes: ``uninstall`` and ``release``.

Every TracerouteProbe carries the ``traceroute.dev/cleanup`` finalizer: its Pushgateway
groups and the shared monitoring objects live outside owner-reference reach, and only
the operator removes them. Without an operator nobody removes the finalizer, so deleting
the probe (or its namespace) would hang for ever while its CronJob keeps firing.

- ``uninstall`` (the chart's pre-delete hook, while the operator still runs): delete every
  probe the release serves and wait, bounded, until the operator has cleaned them up.
- ``release`` (no operator serves the namespace any more, e.g. it was dropped from
  ``watchNamespaces``): delete the namespace's probes and do the operator's cleanup
  here (Pushgateway groups, CronJob, shared objects when none is left), then remove the
  finalizer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .kube import Kube, KubeError
from .naming import API_VERSION, FINALIZER, PLURAL
from .reconciler import ProbeReconciler
from .ref import ProbeRef

log = logging.getLogger("traceroute_operator")

POLL_SECONDS = 2.0


def probes_in(kube: Kube, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """The TracerouteProbes of these namespaces (empty: of every namespace)."""
    found: list[dict[str, Any]] = []
    for scope in namespaces or (None,):
        found.extend(kube.list(API_VERSION, PLURAL, scope))
    return found


def _delete(kube: Kube, probe: Mapping[str, Any]) -> None:
    ref = ProbeRef.from_body(probe)
    if (probe.get("metadata") or {}).get("deletionTimestamp"):
        return
    kube.delete(API_VERSION, PLURAL, ref.namespace, ref.name)


def uninstall(
    kube: Kube,
    namespaces: Sequence[str],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ProbeRef]:
    """Delete every probe of ``namespaces`` and wait until the operator let them go;
    the probes still there after ``timeout`` seconds (empty: all gone)."""
    for probe in probes_in(kube, namespaces):
        _delete(kube, probe)
    deadline = clock() + timeout
    while True:
        remaining = [ProbeRef.from_body(p) for p in probes_in(kube, namespaces)]
        if not remaining or clock() >= deadline:
            return remaining
        sleep(min(POLL_SECONDS, max(0.0, deadline - clock())))


def release(reconciler: ProbeReconciler, namespace: str) -> list[ProbeRef]:
    """Delete the probes of ``namespace``, clean up after them without the operator and
    remove their finalizer; the probes released."""
    kube = reconciler.ctx.kube
    released: list[ProbeRef] = []
    for probe in probes_in(kube, [namespace]):
        ref = ProbeRef.from_body(probe)
        _delete(kube, probe)
        # an unreachable Pushgateway does not block: the groups are left with an Event
        reconciler.cleanup(probe, give_up=True)
        if _remove_finalizer(kube, ref):
            released.append(ref)
    return released


def _remove_finalizer(kube: Kube, ref: ProbeRef) -> bool:
    """Drop the operator's finalizer (conditional on the resourceVersion read, so another
    finalizer added meanwhile is kept); True once done or the probe is gone."""
    for _attempt in range(5):
        current = kube.get(API_VERSION, PLURAL, ref.namespace, ref.name)
        if current is None:
            return True
        meta = current.get("metadata") or {}
        finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        try:
            kube.merge_patch(
                API_VERSION,
                PLURAL,
                ref.namespace,
                ref.name,
                {
                    "metadata": {
                        "finalizers": finalizers or None,
                        "resourceVersion": meta.get("resourceVersion"),
                    }
                },
            )
            return True
        except KubeError as exc:
            if exc.not_found:
                return True
            if not exc.conflict:
                raise
    log.warning("%s/%s: finalizer not removed (conflicting writers)", ref.namespace, ref.name)
    return False
