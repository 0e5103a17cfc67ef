"""Monitoring objects the operator generates: ServiceMonitor, PrometheusRule, dashboards.

All builders are pure functions of the settings (and of the probe's ProbeRef and
ProbeSpec for the PrometheusRule); the operator applies what they return.
"""

from .dashboards import build_dashboard_configmaps, build_dashboards
from .prometheusrule import build_prometheusrule, prometheusrule_name
from .servicemonitor import build_pushgateway_servicemonitor
from .settings import MonitoringSettings

__all__ = [
    "MonitoringSettings",
    "build_dashboard_configmaps",
    "build_dashboards",
    "build_prometheusrule",
    "build_pushgateway_servicemonitor",
    "prometheusrule_name",
]
