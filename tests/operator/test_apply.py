"""Reconcile (apply.ChildApplier) against a fake apiserver: objects, status, events, metrics."""

from __future__ import annotations

from typing import Any

import pytest
from traceroute_operator.apply import ChildApplier
from traceroute_operator.children import desired_objects
from traceroute_operator.config import OperatorConfig
from traceroute_operator.context import OperatorContext
from traceroute_operator.errors import RetryableError
from traceroute_operator.metrics import OperatorMetrics
from traceroute_operator.monitoring import MonitoringSettings
from traceroute_operator.pushgateway_policy import effective_pushgateway
from traceroute_operator.shared import SharedMonitoring
from traceroute_operator.status import condition
from traceroute_operator.trust import SECRET_OPT_IN_LABEL

from tests.operator.fakes import Clock, FakeKube, event_reasons, probe_body, sample
from tests.operator.probes import parsed

CONFIG = OperatorConfig(probe_image="registry.example/probe:1")


def applier(kube: FakeKube, config: OperatorConfig = CONFIG) -> ChildApplier:
    ctx = OperatorContext.create(kube, config, OperatorMetrics(), Clock())
    return ChildApplier(ctx, SharedMonitoring(ctx))


def stored_status(kube: FakeKube, name: str = "edge") -> dict[str, Any]:
    probe = kube.stored("tracerouteprobes", "net", name)
    assert probe is not None
    return dict(probe.get("status") or {})


def test_applies_what_the_builders_make_and_reports_ready() -> None:
    kube = FakeKube()
    body = kube.put(probe_body(spec={"targets": ["10.0.9.9"], "suspend": True}))
    verb = applier(kube)
    verb.reconcile(body)
    ref, spec = parsed(body)
    desired = desired_objects(ref, spec, effective_pushgateway(spec, CONFIG, ref), CONFIG)
    cronjob = kube.stored("cronjobs", "net", "trp-edge")
    assert cronjob is not None
    assert cronjob["spec"] == desired.cronjob["spec"]
    (rule,) = desired.owned_monitoring
    assert kube.stored("prometheusrules", "net", rule["metadata"]["name"]) is not None
    assert kube.stored("servicemonitors", "traceroute-system", "traceroute-pushgateway")
    status = stored_status(kube)
    assert status["observedGeneration"] == 1
    assert status["cronJobName"] == "trp-edge"
    ready = condition(status, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "Suspended")
    monitoring = condition(status, "MonitoringReady")
    assert monitoring is not None and monitoring["status"] == "True"
    assert sample(verb.ctx.metrics, "traceroute_operator_reconciles_total", result="ok") == 1
    assert sample(verb.ctx.metrics, "traceroute_operator_probes") == 1
    assert kube.events == []


def test_an_unusable_spec_stalls_once_and_applies_nothing() -> None:
    kube = FakeKube()
    body = kube.put(probe_body(spec={"targets": ["10.0.9.9"], "port": 80}))
    verb = applier(kube)
    verb.reconcile(body)
    status = stored_status(kube)
    stalled = condition(status, "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert stalled["message"].startswith("spec.port")
    assert kube.calls_of("apply") == []
    assert event_reasons(kube) == ["InvalidSpec"]
    # the same problem again: status already says so, no second Event
    verb.reconcile(kube.stored("tracerouteprobes", "net", "edge") or {})
    assert event_reasons(kube) == ["InvalidSpec"]
    assert sample(verb.ctx.metrics, "traceroute_operator_reconciles_total", result="invalid") == 2


def test_a_cronjob_the_apiserver_refuses_stalls() -> None:
    kube = FakeKube()
    kube.fail("apply", "cronjobs", 422, "spec.affinity: Invalid value")
    verb = applier(kube)
    verb.reconcile(kube.put(probe_body()))
    stalled = condition(stored_status(kube), "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert stalled["message"] == "CronJob rejected: spec.affinity: Invalid value"
    assert event_reasons(kube) == ["InvalidSpec"]
    assert sample(verb.ctx.metrics, "traceroute_operator_errors_total", stage="apply") == 1


def test_a_temporary_apply_failure_is_retried_and_says_reconciling() -> None:
    kube = FakeKube()
    kube.fail("apply", "cronjobs", 500, "etcd timeout")
    verb = applier(kube)
    with pytest.raises(RetryableError, match="applying CronJob failed"):
        verb.reconcile(kube.put(probe_body()))
    reconciling = condition(stored_status(kube), "Reconciling")
    assert reconciling is not None and reconciling["status"] == "True"
    assert sample(verb.ctx.metrics, "traceroute_operator_reconciles_total", result="retry") == 1
    assert kube.events == []


def test_missing_monitoring_crds_name_the_switch_and_post_one_event() -> None:
    kube = FakeKube()
    kube.fail("apply", "prometheusrules", 404, "404 page not found")
    kube.fail("apply", "servicemonitors", 404, "404 page not found")
    verb = applier(kube)
    verb.reconcile(kube.put(probe_body()))
    monitoring = condition(stored_status(kube), "MonitoringReady")
    assert monitoring is not None and monitoring["status"] == "False"
    assert "TRACEROUTE_PROMETHEUSRULE_ENABLED=false" in monitoring["message"]
    assert "TRACEROUTE_SERVICEMONITOR_ENABLED=false" in monitoring["message"]
    ready = condition(stored_status(kube), "Ready")
    assert ready is not None and ready["status"] == "True"  # monitoring never blocks it
    verb.reconcile(kube.stored("tracerouteprobes", "net", "edge") or {})
    assert event_reasons(kube) == ["MonitoringNotGenerated"]


def test_no_monitoring_condition_when_everything_is_switched_off() -> None:
    kube = FakeKube()
    settings = MonitoringSettings(
        servicemonitor_enabled=False, prometheusrule_enabled=False, dashboards_enabled=False
    )
    verb = applier(kube, OperatorConfig(monitoring=settings))
    verb.reconcile(kube.put(probe_body()))
    assert condition(stored_status(kube), "MonitoringReady") is None
    assert [plural for plural, _, _ in kube.calls_of("apply")] == ["cronjobs"]


def test_a_conflicting_writer_is_read_again_not_overwritten() -> None:
    kube = FakeKube()
    body = kube.put(probe_body())
    kube.conflicts_left = 2
    applier(kube).reconcile(body)
    assert condition(stored_status(kube), "Ready") is not None
    assert len(kube.calls_of("replace_status")) == 3


def _secret(kube: FakeKube, name: str, labels: dict[str, str] | None) -> None:
    meta = {"name": name, "namespace": "net", "labels": labels or {}}
    data = {"username": "YQ==", "password": "Yg==", "ca.crt": "Yw=="}
    kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data})


OPTED_IN = {SECRET_OPT_IN_LABEL: "true"}
OWN_URL = "https://pgw.team.example:9091"


@pytest.mark.parametrize(
    ("spec", "secrets", "forbidden", "reason"),
    [
        ({"image": "attacker.example/x:1"}, {}, False, "ProbeImageNotAllowed"),
        (
            {"pushgateway": {"url": "http://attacker.example"}},
            {},
            False,
            "PushgatewayURLNotAllowed",
        ),
        (
            {"pushgateway": {"basicAuth": {"secretName": "db"}}},
            {"db": None},
            False,
            "SecretNotOptedIn",
        ),
        (
            {"pushgateway": {"url": OWN_URL, "tlsCA": {"secretName": "db"}}},
            {"db": None},
            False,
            "SecretNotOptedIn",
        ),
        ({"pushgateway": {"basicAuth": {"secretName": "gone"}}}, {}, False, "SecretNotFound"),
        (
            {"pushgateway": {"basicAuth": {"secretName": "pgw"}}},
            {"pgw": OPTED_IN},
            True,
            "SecretNotReadable",
        ),
    ],
)
def test_a_spec_the_trust_rules_refuse_stalls_naming_the_rule_and_builds_nothing(
    spec: dict[str, Any],
    secrets: dict[str, dict[str, str] | None],
    forbidden: bool,
    reason: str,
) -> None:
    kube = FakeKube()
    for name, labels in secrets.items():
        _secret(kube, name, labels)
    if forbidden:
        kube.fail("get", "secrets", 403, 'secrets "pgw" is forbidden')
    body = kube.put(probe_body(spec={"targets": ["10.0.9.9"], **spec}))
    config = OperatorConfig(
        probe_image="registry.example/probe:1", allowed_pushgateway_urls=(OWN_URL,)
    )
    verb = applier(kube, config)
    verb.reconcile(body)
    stalled = condition(stored_status(kube), "Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert f"rule {reason}" in stalled["message"]
    assert kube.calls_of("apply") == []  # no CronJob mounting or pulling what was refused
    assert event_reasons(kube) == ["TrustRefused"]


def test_opted_in_secrets_an_allowed_url_and_image_are_used() -> None:
    kube = FakeKube()
    _secret(kube, "pgw", OPTED_IN)
    own = {
        "url": OWN_URL,
        "basicAuth": {"secretName": "pgw"},
        "tlsCA": {"secretName": "pgw"},
    }
    body = kube.put(
        probe_body(
            spec={"targets": ["10.0.9.9"], "image": "registry.example/probe:2", "pushgateway": own}
        )
    )
    config = OperatorConfig(
        probe_image="registry.example/probe:1", allowed_pushgateway_urls=(OWN_URL,)
    )
    applier(kube, config).reconcile(body)
    ready = condition(stored_status(kube), "Ready")
    assert ready is not None and ready["status"] == "True"
    cronjob = kube.stored("cronjobs", "net", "trp-edge")
    assert cronjob is not None
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/probe:2"
    assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {"pgw"}
