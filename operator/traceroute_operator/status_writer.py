"""Read-modify-write of a TracerouteProbe's status, conditional on its resourceVersion.

A conflict (someone else wrote in between) re-reads and redoes the change, so concurrent
writers never lose each other's fields; the per-probe lock only orders this process's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import RetryableError
from .kube import Kube, KubeError
from .metrics import OperatorMetrics
from .naming import API_VERSION, KIND, PLURAL
from .ref import ProbeRef

STATUS_WRITE_ATTEMPTS = 8

# current object -> the new status, or None to leave it alone
Mutation = Callable[[dict[str, Any]], dict[str, Any] | None]


class StatusWriter:
    def __init__(self, kube: Kube, metrics: OperatorMetrics) -> None:
        self.kube = kube
        self.metrics = metrics

    def write(
        self, ref: ProbeRef, mutate: Mutation, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The object as written (or unchanged), None when it is gone or ``mutate`` skipped.

        Starts from ``body`` when given (kopf's fresh copy), re-reads after a conflict.
        """
        current: dict[str, Any] | None = dict(body) if body is not None else None
        for _attempt in range(STATUS_WRITE_ATTEMPTS):
            if current is None:
                current = self.kube.get(API_VERSION, PLURAL, ref.namespace, ref.name)
                if current is None:
                    return None
            new_status = mutate(current)
            if new_status is None:
                return None
            if new_status == current.get("status"):
                return current
            try:
                return self.kube.replace_status(_status_object(ref, current, new_status), PLURAL)
            except KubeError as exc:
                if exc.not_found:
                    return None
                if not exc.conflict:
                    self.metrics.errors.labels("status").inc()
                    raise
            current = None  # someone else wrote: read again and redo the change
        self.metrics.errors.labels("status").inc()
        raise RetryableError(
            f"status of {ref.namespace}/{ref.name}: too many conflicting writers", 2.0
        )


def _status_object(
    ref: ProbeRef, current: Mapping[str, Any], status: dict[str, Any]
) -> dict[str, Any]:
    meta = current.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": ref.name,
            "namespace": ref.namespace,
            "resourceVersion": meta.get("resourceVersion"),
        },
        "status": status,
    }
