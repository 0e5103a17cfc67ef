"""The shared ServiceMonitor that makes Prometheus scrape the Pushgateway."""

from __future__ import annotations

from typing import Any

from traceroute_probe.contract import PUSHGATEWAY_JOB

from ..naming import OPERATOR_JOB
from ._common import common_labels
from .settings import MonitoringSettings


def build_pushgateway_servicemonitor(settings: MonitoringSettings) -> dict[str, Any]:
    """ServiceMonitor (monitoring.coreos.com/v1) for the Pushgateway.

    One object for all probes, in the operator's namespace; the operator deletes it
    when the last TracerouteProbe is gone. ``honorLabels`` keeps the ``job``,
    ``namespace`` and ``probe`` labels of the pushed groups instead of replacing
    them with the Pushgateway's own target labels.
    """
    endpoint: dict[str, Any] = {
        "port": settings.pushgateway_port_name,
        "path": "/metrics",
        "scheme": "http",
        "interval": settings.scrape_interval,
        "honorLabels": True,
    }
    if settings.servicemonitor_keep_only_traceroute_jobs:
        # Job names are plain words: no regex escaping needed (and RE2 is anchored).
        jobs = f"{PUSHGATEWAY_JOB}|{OPERATOR_JOB}"
        endpoint["metricRelabelings"] = [
            {"sourceLabels": ["job"], "regex": jobs, "action": "keep"},
        ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": settings.servicemonitor_name,
            "namespace": settings.operator_namespace,
            "labels": {**common_labels("pushgateway-scrape"), **settings.servicemonitor_labels},
        },
        "spec": {
            "selector": {"matchLabels": dict(settings.pushgateway_selector)},
            "namespaceSelector": {"matchNames": [settings.pushgateway_namespace]},
            "endpoints": [endpoint],
        },
    }
