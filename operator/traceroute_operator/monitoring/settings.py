"""Settings of the monitoring objects the operator generates.

Every field can be set from the environment (the chart sets them on the operator's
Deployment): ``TRACEROUTE_<FIELD NAME IN UPPER CASE>``, booleans as true/false,
label maps as ``key=value,key2=value2``. See ``MonitoringSettings.from_env``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "TRACEROUTE_"

_DEFAULT_SEVERITIES: dict[str, str] = {
    "TraceroutePathChanged": "warning",
    "TracerouteDestinationUnreachable": "critical",
    "TracerouteHopCountChanged": "warning",
    "TracerouteDestinationLossHigh": "warning",
    "TracerouteProbeStale": "warning",
}
ALERT_NAMES: tuple[str, ...] = tuple(_DEFAULT_SEVERITIES)

# The public ones are also patterns of the chart's values.schema.json
# (hack/chartgen.py), so helm rejects what the operator would.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
PROM_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
PROM_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


@dataclass(frozen=True)
class MonitoringSettings:
    """What the operator generates for Prometheus and Grafana, and where."""

    # Switches: each kind of object can be left to the user.
    servicemonitor_enabled: bool = True
    prometheusrule_enabled: bool = True
    dashboards_enabled: bool = True

    # The shared ServiceMonitor lives in the operator's namespace.
    operator_namespace: str = "traceroute-system"
    servicemonitor_name: str = "traceroute-pushgateway"
    # kube-prometheus-stack only picks up ServiceMonitors/PrometheusRules carrying
    # `release: <its release name>` unless told otherwise.
    servicemonitor_labels: Mapping[str, str] = field(default_factory=dict)
    scrape_interval: str = "30s"
    # Keep only the groups of the probe and the operator: a Pushgateway is often
    # shared, and other teams' groups are not ours to export a second time.
    servicemonitor_keep_only_traceroute_jobs: bool = True

    # Where the Pushgateway runs (its Service) and how to reach it.
    pushgateway_namespace: str = "monitoring"
    pushgateway_service: str = "prometheus-pushgateway"
    pushgateway_port: int = 9091
    pushgateway_port_name: str = "http"
    pushgateway_selector: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus-pushgateway"}
    )

    # Grafana dashboards as ConfigMaps for the Grafana sidecar.
    dashboards_namespace: str = "monitoring"
    dashboard_label_key: str = "grafana_dashboard"
    dashboard_label_value: str = "1"
    dashboard_folder_annotation_key: str = "grafana_folder"
    dashboard_folder: str = "Traceroute"

    # PrometheusRule (one per TracerouteProbe, in the probe's namespace).
    prometheusrule_labels: Mapping[str, str] = field(default_factory=dict)
    alert_labels: Mapping[str, str] = field(default_factory=dict)
    alert_severities: Mapping[str, str] = field(default_factory=lambda: dict(_DEFAULT_SEVERITIES))
    destination_loss_threshold: float = 0.2
    # A probe is stale when no run finished for stale_multiplier x its longest
    # schedule gap (and at least stale_min_grace_seconds past one gap: CronJob
    # start latency, pod start, the run itself).
    stale_multiplier: float = 3.0
    stale_min_grace_seconds: int = 300
    # Unreachable / loss / expected-hops alerts need the condition in this many
    # consecutive runs, so one bad run does not page anybody.
    alert_confirm_runs: int = 2
    # How long TraceroutePathChanged / TracerouteHopCountChanged stay firing after
    # a change.
    change_alert_window_seconds: int = 900

    def __post_init__(self) -> None:
        for name in ("operator_namespace", "pushgateway_namespace", "dashboards_namespace"):
            _check(bool(DNS_LABEL.match(getattr(self, name))), name, "must be a DNS-1123 label")
        for name in ("servicemonitor_name", "pushgateway_service"):
            _check(bool(DNS_SUBDOMAIN.match(getattr(self, name))), name, "must be a DNS name")
        for name in (
            "servicemonitor_labels",
            "pushgateway_selector",
            "prometheusrule_labels",
        ):
            _check_k8s_labels(name, getattr(self, name))
        _check_k8s_labels("dashboard_label", {self.dashboard_label_key: self.dashboard_label_value})
        _check(bool(self.pushgateway_selector), "pushgateway_selector", "must not be empty")
        for key in self.alert_labels:
            _check(bool(PROM_LABEL_NAME.match(key)), "alert_labels", f"{key!r} is no label name")
        unknown = set(self.alert_severities) - set(ALERT_NAMES)
        _check(not unknown, "alert_severities", f"unknown alerts {sorted(unknown)}")
        _check(bool(PROM_DURATION.match(self.scrape_interval)), "scrape_interval", "not a duration")
        _check(1 <= self.pushgateway_port <= 65535, "pushgateway_port", "must be 1..65535")
        _check(
            0.0 < self.destination_loss_threshold < 1.0,
            "destination_loss_threshold",
            "must be between 0 and 1 (exclusive)",
        )
        _check(self.stale_multiplier >= 1.0, "stale_multiplier", "must be >= 1")
        _check(self.stale_min_grace_seconds >= 0, "stale_min_grace_seconds", "must be >= 0")
        _check(1 <= self.alert_confirm_runs <= 100, "alert_confirm_runs", "must be 1..100")
        _check(
            self.change_alert_window_seconds >= 60, "change_alert_window_seconds", "must be >= 60"
        )

    @property
    def pushgateway_url(self) -> str:
        """In-cluster URL of the Pushgateway Service."""
        return (
            f"http://{self.pushgateway_service}.{self.pushgateway_namespace}.svc:"
            f"{self.pushgateway_port}"
        )

    def severity(self, alert: str) -> str:
        return self.alert_severities.get(alert, _DEFAULT_SEVERITIES[alert])

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MonitoringSettings:
        """Settings from ``TRACEROUTE_<FIELD>`` variables; unset ones keep their default."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse_env_value(f.name, str(f.type), raw)
        return cls(**values)


def env_reference() -> list[tuple[str, str]]:
    """(variable name, default) for every setting, for the README and the chart."""
    rows = []
    for f in dataclasses.fields(MonitoringSettings):
        default: Any = f.default
        factory: Any = f.default_factory
        if default is dataclasses.MISSING and factory is not dataclasses.MISSING:
            default = factory()
        if isinstance(default, Mapping):
            shown = ",".join(f"{k}={v}" for k, v in default.items())
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = str(default)
        rows.append((ENV_PREFIX + f.name.upper(), shown))
    return rows


def _parse_env_value(name: str, type_name: str, raw: str) -> Any:
    if type_name == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: {raw!r} is not a boolean")
    if type_name == "int":
        return int(raw)
    if type_name == "float":
        return float(raw)
    if type_name.startswith("Mapping"):
        return parse_label_map(raw, what=ENV_PREFIX + name.upper())
    return raw.strip()


def parse_label_map(raw: str, what: str = "labels") -> dict[str, str]:
    """``a=b,c=d`` -> {"a": "b", "c": "d"}; empty string -> {}."""
    result: dict[str, str] = {}
    for raw_item in raw.split(","):
        item = raw_item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what}: {item!r} is not key=value")
        result[key.strip()] = value.strip()
    return result


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"monitoring setting {name}: {message}")


def _check_k8s_labels(name: str, labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        _check(bool(_LABEL_NAME.match(key)), name, f"{key!r} is no Kubernetes label name")
        _check(bool(_LABEL_VALUE.match(value)), name, f"{value!r} is no Kubernetes label value")
