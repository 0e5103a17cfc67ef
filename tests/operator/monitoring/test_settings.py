"""MonitoringSettings: defaults, environment parsing, validation."""

from __future__ import annotations

import pytest
from traceroute_operator.monitoring.settings import (
    MonitoringSettings,
    env_reference,
    parse_label_map,
)


def test_defaults_fit_kube_prometheus_stack_and_the_grafana_sidecar() -> None:
    settings = MonitoringSettings()
    assert settings.dashboard_label_key == "grafana_dashboard"
    assert settings.dashboard_label_value == "1"
    assert settings.pushgateway_url == "http://prometheus-pushgateway.monitoring.svc:9091"
    assert settings.severity("TracerouteDestinationUnreachable") == "critical"


def test_from_env_reads_every_kind_of_field() -> None:
    settings = MonitoringSettings.from_env(
        {
            "TRACEROUTE_SERVICEMONITOR_ENABLED": "false",
            "TRACEROUTE_SERVICEMONITOR_LABELS": "release=kps, team=net",
            "TRACEROUTE_PUSHGATEWAY_PORT": "19091",
            "TRACEROUTE_DESTINATION_LOSS_THRESHOLD": "0.35",
            "TRACEROUTE_DASHBOARDS_NAMESPACE": "grafana",
            "TRACEROUTE_ALERT_SEVERITIES": "TraceroutePathChanged=critical",
            "UNRELATED": "x",
        }
    )
    assert settings.servicemonitor_enabled is False
    assert settings.servicemonitor_labels == {"release": "kps", "team": "net"}
    assert settings.pushgateway_port == 19091
    assert settings.destination_loss_threshold == 0.35
    assert settings.dashboards_namespace == "grafana"
    assert settings.severity("TraceroutePathChanged") == "critical"
    assert settings.severity("TracerouteProbeStale") == "warning"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRACEROUTE_PROMETHEUSRULE_ENABLED": "maybe"}, "not a boolean"),
        ({"TRACEROUTE_SERVICEMONITOR_LABELS": "release"}, "not key=value"),
        ({"TRACEROUTE_SERVICEMONITOR_LABELS": "release=a b"}, "label value"),
        ({"TRACEROUTE_DASHBOARDS_NAMESPACE": "Not_A_Namespace"}, "dashboards_namespace"),
        ({"TRACEROUTE_DESTINATION_LOSS_THRESHOLD": "1.5"}, "destination_loss_threshold"),
        ({"TRACEROUTE_STALE_MULTIPLIER": "0.5"}, "stale_multiplier"),
        ({"TRACEROUTE_SCRAPE_INTERVAL": "30 seconds"}, "scrape_interval"),
        ({"TRACEROUTE_ALERT_SEVERITIES": "NoSuchAlert=page"}, "unknown alerts"),
        ({"TRACEROUTE_ALERT_LABELS": "bad-name=x"}, "alert_labels"),
        ({"TRACEROUTE_PUSHGATEWAY_SELECTOR": ""}, "must not be empty"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonitoringSettings.from_env(env)


def test_label_map_parsing() -> None:
    assert parse_label_map("") == {}
    assert parse_label_map("a=1,,b = 2 ") == {"a": "1", "b": "2"}


def test_env_reference_lists_every_setting() -> None:
    names = [name for name, _ in env_reference()]
    assert "TRACEROUTE_SERVICEMONITOR_LABELS" in names
    assert len(names) == len(set(names)) == len(MonitoringSettings.__dataclass_fields__)
    assert ("TRACEROUTE_DASHBOARD_LABEL_VALUE", "1") in env_reference()
