"""The generated objects are accepted by a real kube-apiserver with the real
prometheus-operator CRDs (schema + CEL validation), and owner references work."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from traceroute_operator.monitoring import (
    MonitoringSettings,
    build_dashboard_configmaps,
    build_prometheusrule,
    build_pushgateway_servicemonitor,
)

from devcluster import monitoring_crds as crds
from devcluster.controlplane import ControlPlane
from devcluster.kubetools import kubectl
from devcluster.runtime import wait_until
from tests.operator.probes import parsed

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
GROUP, VERSION = "monitoring.coreos.com", "v1"


@pytest.fixture
def monitoring_crds(control_plane: ControlPlane) -> ControlPlane:
    crds.install_crds(control_plane.kubeconfig)
    # the TracerouteProbe CRD owns the PrometheusRules
    kubectl(
        [
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(REPO / "crds/tracerouteprobes.yaml"),
        ],
        kubeconfig=control_plane.kubeconfig,
    )
    kubectl(
        [
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/tracerouteprobes.traceroute.dev",
        ],
        kubeconfig=control_plane.kubeconfig,
    )
    return control_plane


@pytest.fixture
def scratch_namespaces(admin_api: k8s.ApiClient) -> Iterator[list[str]]:
    """Three fresh namespaces: the operator's, a probe's, Grafana's."""
    core = k8s.CoreV1Api(admin_api)
    names = [f"obs-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    try:
        for name in names:
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        yield names
    finally:
        for name in names:
            with contextlib.suppress(k8s.ApiException):
                core.delete_namespace(name)


def test_generated_objects_are_accepted_and_garbage_collected(
    monitoring_crds: ControlPlane, admin_api: k8s.ApiClient, scratch_namespaces: list[str]
) -> None:
    operator_ns, probe_ns, grafana_ns = scratch_namespaces
    settings = MonitoringSettings(
        operator_namespace=operator_ns,
        dashboards_namespace=grafana_ns,
        servicemonitor_labels={"release": "kube-prometheus-stack"},
        prometheusrule_labels={"release": "kube-prometheus-stack"},
    )
    # dict bodies in, dicts out: the typed stubs of the client do not model that
    custom: Any = k8s.CustomObjectsApi(admin_api)
    core: Any = k8s.CoreV1Api(admin_api)

    sm = build_pushgateway_servicemonitor(settings)
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, operator_ns, "servicemonitors", sm
    )
    assert created["spec"]["endpoints"][0]["honorLabels"] is True

    for cm in build_dashboard_configmaps(settings):
        core.create_namespaced_config_map(grafana_ns, cm)
    listed = core.list_namespaced_config_map(grafana_ns, label_selector="grafana_dashboard=1")
    assert {c.metadata.name for c in listed.items} == {
        "traceroute-dashboard-overview",
        "traceroute-dashboard-probe",
    }

    probe: dict[str, Any] = {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "metadata": {"name": "web", "namespace": probe_ns},
        "spec": {
            "targets": ["example.org", "192.0.2.10"],
            "schedule": "*/10 * * * *",
            "expectedHops": 9,
        },
    }
    probe = custom.create_namespaced_custom_object(
        "traceroute.dev", "v1alpha1", probe_ns, "tracerouteprobes", probe
    )
    rule = build_prometheusrule(*parsed(probe), settings)
    created_rule = custom.create_namespaced_custom_object(
        GROUP, VERSION, probe_ns, "prometheusrules", rule
    )
    assert created_rule["metadata"]["ownerReferences"][0]["uid"] == probe["metadata"]["uid"]
    assert len(created_rule["spec"]["groups"][0]["rules"]) == len(
        rule["spec"]["groups"][0]["rules"]
    )

    # the apiserver validates: a broken rule is refused with the field named
    broken = build_prometheusrule(*parsed(probe), settings)
    broken["metadata"]["name"] = "broken"
    broken["spec"]["groups"][0]["rules"][1]["for"] = "ten minutes"
    with pytest.raises(k8s.ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, probe_ns, "prometheusrules", broken)
    assert refused.value.status == 422
    assert "for" in str(refused.value.body)

    # deleting the probe lets the garbage collector remove its PrometheusRule
    custom.delete_namespaced_custom_object(
        "traceroute.dev", "v1alpha1", probe_ns, "tracerouteprobes", "web"
    )

    def rule_gone() -> bool:
        try:
            custom.get_namespaced_custom_object(
                GROUP, VERSION, probe_ns, "prometheusrules", rule["metadata"]["name"]
            )
        except k8s.ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_until(rule_gone, timeout=60, what="PrometheusRule garbage-collected")
