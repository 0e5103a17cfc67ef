"""ServiceMonitor and PrometheusRule builders: valid against the real CRD schemas."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from traceroute_operator.monitoring import (
    MonitoringSettings,
    build_prometheusrule,
    build_pushgateway_servicemonitor,
    prometheusrule_name,
)
from traceroute_operator.ref import ProbeRef
from traceroute_operator.spec import ProbeSpec, SpecError

from devcluster import monitoring_crds
from tests.operator.probes import parsed

PROBE: dict[str, Any] = {
    "apiVersion": "traceroute.dev/v1alpha1",
    "kind": "TracerouteProbe",
    "metadata": {
        "name": "web",
        "namespace": "team-a",
        "uid": "3c1d0c56-7d7a-4a43-9f1e-1b9d1d2b6a10",
    },
    "spec": {"schedule": "0 * * * *", "targets": ["example.org", "192.0.2.7"], "expectedHops": 7},
}


def test_servicemonitor_is_valid_and_honours_labels() -> None:
    settings = MonitoringSettings(
        servicemonitor_labels={"release": "kube-prometheus-stack"},
        operator_namespace="traceroute-system",
        pushgateway_namespace="monitoring",
        pushgateway_selector={"app.kubernetes.io/name": "prometheus-pushgateway"},
    )
    sm = build_pushgateway_servicemonitor(settings)
    monitoring_crds.validate(sm)
    assert sm["metadata"]["namespace"] == "traceroute-system"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] == "http"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["monitoring"]}
    assert endpoint["metricRelabelings"][0]["action"] == "keep"


def test_servicemonitor_without_job_filter_is_valid() -> None:
    sm = build_pushgateway_servicemonitor(
        MonitoringSettings(servicemonitor_keep_only_traceroute_jobs=False, scrape_interval="1m")
    )
    monitoring_crds.validate(sm)
    assert "metricRelabelings" not in sm["spec"]["endpoints"][0]
    assert sm["spec"]["endpoints"][0]["interval"] == "1m"


def test_schema_check_rejects_a_broken_object() -> None:
    """The offline validation has teeth: a wrong type or a bad duration is refused."""
    sm = build_pushgateway_servicemonitor(MonitoringSettings())
    broken = copy.deepcopy(sm)
    broken["spec"]["endpoints"][0]["honorLabels"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        monitoring_crds.validate(broken)
    rule = build_prometheusrule(*parsed(PROBE), MonitoringSettings())
    broken_rule = copy.deepcopy(rule)
    broken_rule["spec"]["groups"][0]["rules"][1]["for"] = "7 minutes"
    with pytest.raises(jsonschema.ValidationError):
        monitoring_crds.validate(broken_rule)


@pytest.mark.parametrize(
    "schedule", ["*/5 * * * *", "0 * * * *", "@daily", "0 9 * * 1-5", "*/1 * * * *", "@every 90s"]
)
def test_prometheusrule_is_valid_for_schedules(schedule: str) -> None:
    probe = copy.deepcopy(PROBE)
    probe["spec"]["schedule"] = schedule
    monitoring_crds.validate(build_prometheusrule(*parsed(probe), MonitoringSettings()))


def test_prometheusrule_is_owned_by_the_probe_and_selects_only_it() -> None:
    settings = MonitoringSettings(
        prometheusrule_labels={"release": "kps"}, alert_labels={"team": "netops"}
    )
    rule = build_prometheusrule(*parsed(PROBE), settings)
    assert rule["metadata"]["name"] == prometheusrule_name("web") == "traceroute-probe-web"
    assert rule["metadata"]["namespace"] == "team-a"
    assert rule["metadata"]["labels"]["release"] == "kps"
    (owner,) = rule["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "name": "web",
        "uid": PROBE["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    rules = rule["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "TraceroutePathChanged",
        "TracerouteDestinationUnreachable",
        "TracerouteHopCountChanged",
        "TracerouteDestinationLossHigh",
        "TracerouteProbeStale",
    }
    for r in rules:
        assert 'namespace="team-a", probe="web"' in r["expr"]
        assert r["labels"]["team"] == "netops"
        assert r["labels"]["severity"] in ("warning", "critical")
        assert set(r["annotations"]) == {"summary", "description"}
        assert "team-a/web" in r["annotations"]["summary"] + r["annotations"]["description"]


def test_stale_threshold_follows_the_longest_schedule_gap() -> None:
    def stale_expr(schedule: str) -> str:
        probe = copy.deepcopy(PROBE)
        probe["spec"]["schedule"] = schedule
        rules = build_prometheusrule(*parsed(probe), MonitoringSettings())["spec"]["groups"][0][
            "rules"
        ]
        (rule,) = [r for r in rules if r.get("labels", {}).get("reason") == "no_recent_run"]
        return str(rule["expr"])

    # hourly: 3 x 1h; every 5 min: 5 min + the 5 min grace beats 3 x 5 min = 15 min
    assert stale_expr("0 * * * *").endswith("> 10800")
    assert stale_expr("*/5 * * * *").endswith("> 900")
    assert stale_expr("* * * * *").endswith("> 360")
    # weekdays at 9: the weekend gap (72 h) counts, not the daily one
    assert stale_expr("0 9 * * 1-5").endswith(f"> {3 * 72 * 3600}")


def test_suspended_probe_gets_no_stale_alert() -> None:
    probe = copy.deepcopy(PROBE)
    probe["spec"]["suspend"] = True
    rules = build_prometheusrule(*parsed(probe), MonitoringSettings())["spec"]["groups"][0]["rules"]
    assert "TracerouteProbeStale" not in {r["alert"] for r in rules}
    assert "TracerouteDestinationUnreachable" in {r["alert"] for r in rules}


def test_spec_defaults_reach_the_rule_and_no_uid_means_no_owner() -> None:
    # the typed spec carries the CRD's default schedule: every 5 min at the probe's own
    # minute (n/p hashes to offset 0), so stale after 15 min
    rule = build_prometheusrule(
        ProbeRef("n", "p"), ProbeSpec(targets=("a.example",)), MonitoringSettings()
    )
    assert "ownerReferences" not in rule["metadata"]
    rules = rule["spec"]["groups"][0]["rules"]
    (stale,) = [r for r in rules if r.get("labels", {}).get("reason") == "no_recent_run"]
    assert stale["expr"].endswith("> 900")
    assert "'H/5 * * * *' (0-59/5 * * * *)" in stale["annotations"]["description"]
    assert "(targets: a.example)" in stale["annotations"]["description"]


def test_a_schedule_that_cannot_run_stops_at_the_spec() -> None:
    """The builder never sees such a schedule: parsing the spec names the field."""
    with pytest.raises(SpecError, match=r"^spec\.schedule: .*expected 5 fields"):
        ProbeSpec.from_dict({"targets": ["a"], "schedule": "* * *"})


def test_long_probe_names_give_valid_object_names() -> None:
    name = "p" * 253
    probe = {"metadata": {"name": name, "namespace": "n"}, "spec": {"targets": ["a"]}}
    rule = build_prometheusrule(*parsed(probe), MonitoringSettings())
    assert len(rule["metadata"]["name"]) <= 253
    assert len(rule["metadata"]["labels"]["traceroute.dev/probe"]) <= 63
    assert rule["metadata"]["name"] != prometheusrule_name("p" * 252)
