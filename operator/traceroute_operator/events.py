"""Kubernetes Events on a TracerouteProbe (best effort: a lost Event never fails a verb)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from .kube import Kube, KubeError
from .metrics import OperatorMetrics
from .naming import API_VERSION, KIND
from .ref import ProbeRef

log = logging.getLogger("traceroute_operator")

EVENT_MESSAGE_LIMIT = 1024


class EventRecorder:
    def __init__(
        self, kube: Kube, metrics: OperatorMetrics, clock: Callable[[], float], instance: str
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.clock = clock
        self.instance = instance

    def post(self, probe: ProbeRef, reason: str, message: str, type_: str = "Warning") -> None:
        try:
            self.kube.create(self.event(probe, reason, message, type_), "events")
        except KubeError as exc:
            self.metrics.errors.labels("event").inc()
            log.warning(
                "event %s on %s/%s not posted: %s", reason, probe.namespace, probe.name, exc
            )

    def event(self, probe: ProbeRef, reason: str, message: str, type_: str) -> dict[str, Any]:
        now = dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if len(message) > EVENT_MESSAGE_LIMIT:
            message = message[: EVENT_MESSAGE_LIMIT - 3] + "..."
        involved: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": probe.name,
            "namespace": probe.namespace,
        }
        if probe.uid:
            involved["uid"] = probe.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{probe.name}.", "namespace": probe.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "traceroute-operator"},
            "reportingComponent": "traceroute.dev/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
