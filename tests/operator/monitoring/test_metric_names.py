"""No alert and no dashboard query references a metric nobody emits (checked mechanically)."""

from __future__ import annotations

import re

import pytest
from traceroute_operator.monitoring import MonitoringSettings, build_prometheusrule
from traceroute_operator.monitoring.dashboards import build_dashboards

from tests.operator.monitoring.known_metrics import (
    dashboard_queries,
    metric_names,
    operator_families,
    probe_families,
)
from tests.operator.probes import parsed

PROBE = {
    "metadata": {"name": "web", "namespace": "team-a"},
    "spec": {"schedule": "*/5 * * * *", "targets": ["example.org"]},
}


def all_queries() -> list[tuple[str, str]]:
    found = []
    rule_object = build_prometheusrule(*parsed(PROBE), MonitoringSettings())
    for rule in rule_object["spec"]["groups"][0]["rules"]:
        found.append((f"alert {rule['alert']}", rule["expr"]))
        for name, text in rule["annotations"].items():
            # annotation templates run queries too: {{ with printf `QUERY` ... | query }}
            for query in re.findall(r"printf `([^`]*)`", text):
                found.append((f"alert {rule['alert']} {name}", query))
    for uid, dashboard in build_dashboards().items():
        found += [(f"{uid}: {title}", expr) for title, expr in dashboard_queries(dashboard)]
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                found.append((f"{uid}: variable {variable['name']}", variable["query"]))
    return found


def test_metric_name_extraction() -> None:
    expr = (
        'max by (ttl) (traceroute_hop_rtt_avg_seconds{a="x{y}"} * on (ttl) group_right () '
        'traceroute_hop_info) or label_replace(up{job="j"}, "ip", "*", "ip", "")'
    )
    assert metric_names(expr) == {"traceroute_hop_rtt_avg_seconds", "traceroute_hop_info", "up"}


@pytest.mark.parametrize(("where", "expr"), all_queries(), ids=lambda v: str(v)[:60])
def test_every_referenced_metric_exists(where: str, expr: str) -> None:
    known = probe_families() | operator_families()
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    unknown = names - known
    assert not unknown, (
        f"{where} uses {sorted(unknown)}: neither the probe nor the operator emits it"
    )


def test_the_operator_families_come_from_its_real_exposition() -> None:
    assert operator_families() == {
        "traceroute_path_changes_total",
        "traceroute_path_last_change_timestamp_seconds",
    }
