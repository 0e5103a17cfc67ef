"""Every object the operator makes for a probe, from the pure builders.

- per probe, owned by it (garbage-collected with it): the CronJob, the PrometheusRule;
- shared by all probes (outside owner-reference reach, refcounted by the operator): the
  Pushgateway ServiceMonitor and the dashboard ConfigMaps.

Each monitoring kind can be switched off in the monitoring settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .builders.cronjob import build_cronjob
from .config import OperatorConfig
from .monitoring import (
    build_dashboard_configmaps,
    build_prometheusrule,
    build_pushgateway_servicemonitor,
)
from .monitoring.settings import MonitoringSettings
from .pushgateway_policy import EffectivePushgateway
from .ref import ProbeRef
from .spec import ProbeSpec

# What a user sets to stop generating a kind whose CRD the cluster does not have.
SWITCH_OF_KIND = {
    "ServiceMonitor": "TRACEROUTE_SERVICEMONITOR_ENABLED=false",
    "PrometheusRule": "TRACEROUTE_PROMETHEUSRULE_ENABLED=false",
    "ConfigMap": "TRACEROUTE_DASHBOARDS_ENABLED=false",
}


@dataclass(frozen=True)
class DesiredObjects:
    """What one probe owns; the shared objects come from ``shared_objects`` (per process)."""

    cronjob: dict[str, Any]
    owned_monitoring: list[dict[str, Any]]


def owned_monitoring_objects(
    ref: ProbeRef, spec: ProbeSpec, settings: MonitoringSettings
) -> list[dict[str, Any]]:
    if not settings.prometheusrule_enabled:
        return []
    return [build_prometheusrule(ref, spec, settings)]


def shared_objects(settings: MonitoringSettings) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    if settings.servicemonitor_enabled:
        objects.append(build_pushgateway_servicemonitor(settings))
    if settings.dashboards_enabled:
        objects.extend(build_dashboard_configmaps(settings))
    return objects


def desired_objects(
    ref: ProbeRef, spec: ProbeSpec, pushgateway: EffectivePushgateway, config: OperatorConfig
) -> DesiredObjects:
    return DesiredObjects(
        cronjob=build_cronjob(ref, spec, pushgateway, config),
        owned_monitoring=owned_monitoring_objects(ref, spec, config.monitoring),
    )
