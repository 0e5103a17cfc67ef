"""The Argo CD health check follows kstatus.

The check ships the Argo CD way, in charts/traceroute-operator/argocd/resource_customizations/
traceroute.dev/TracerouteProbe/: health.lua, health_test.yaml (Argo CD's own case format)
and testdata/. Here on TracerouteProbes in each state, every one valid against the CRD's
schema (so the script reads the fields the operator really writes); test_chart_cluster.py
and tests/crds/test_kstatus_controlplane.py run it on the objects the real operator wrote to
the real apiserver.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml

from devcluster.chart import ARGOCD_CUSTOMIZATION
from devcluster.paths import CRD_SOURCE
from tests.charts.argocd_health import argocd_health

NOW = "2025-11-24T10:00:00Z"


def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_SOURCE.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
        "observedGeneration": 1,
    }


def probe(
    *,
    generation: int = 1,
    observed: int | None = 1,
    conditions: list[dict[str, Any]] | None = None,
    suspend: bool = False,
    reached: str | None = "1/1",
    deleting: bool = False,
    with_status: bool = True,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "metadata": {"name": "web", "namespace": "default", "generation": generation},
        "spec": {"targets": ["example.org"], "schedule": "*/5 * * * *", "suspend": suspend},
    }
    if deleting:
        obj["metadata"]["deletionTimestamp"] = NOW
    if with_status:
        status: dict[str, Any] = {"conditions": conditions or []}
        if observed is not None:
            status["observedGeneration"] = observed
        if reached is not None:
            status["reached"] = reached
        obj["status"] = status
    jsonschema.validate(obj, _crd_schema())
    return obj


READY = _condition("Ready", "True", "CronJobReady", "CronJob trp-web is in place")
NOT_RECONCILING = _condition("Reconciling", "False", "Reconciled")
NOT_STALLED = _condition("Stalled", "False", "Reconciled")


@pytest.mark.parametrize(
    ("resource", "status", "message_part"),
    [
        (probe(with_status=False), "Progressing", "Waiting for the operator"),
        # what the apiserver returns before the operator acted: the CRD's status default
        (probe(observed=0, reached=None), "Progressing", "Waiting for the operator"),
        (probe(conditions=[READY, NOT_RECONCILING, NOT_STALLED]), "Healthy", "in place"),
        (probe(conditions=[READY], reached="0/1"), "Healthy", "last run: 0/1"),
        (probe(generation=2, observed=1, conditions=[READY]), "Progressing", "generation 2"),
        (probe(observed=None, conditions=[READY]), "Progressing", "generation 1"),
        (
            probe(
                conditions=[
                    _condition("Ready", "False", "Reconciling"),
                    _condition("Reconciling", "True", "Applying", "applying the CronJob"),
                    NOT_STALLED,
                ]
            ),
            "Progressing",
            "applying the CronJob",
        ),
        (
            probe(
                conditions=[
                    _condition("Ready", "False", "InvalidSpec"),
                    NOT_RECONCILING,
                    _condition(
                        "Stalled", "True", "InvalidSpec", "spec.targets: x does not resolve"
                    ),
                ]
            ),
            "Degraded",
            "does not resolve",
        ),
        # a Stalled condition written for an older generation is not the current verdict
        (
            probe(
                generation=3,
                observed=2,
                conditions=[_condition("Stalled", "True", "InvalidSpec", "bad")],
            ),
            "Progressing",
            "generation 3",
        ),
        (
            probe(conditions=[_condition("Ready", "False", "CronJobPending", "creating")]),
            "Progressing",
            "creating",
        ),
        (probe(conditions=[NOT_STALLED]), "Progressing", "become Ready"),
        (probe(conditions=[READY], suspend=True), "Suspended", "suspended"),
        (probe(conditions=[READY], deleting=True), "Progressing", "deleted"),
    ],
)
def test_health_follows_kstatus(resource: dict[str, Any], status: str, message_part: str) -> None:
    health = argocd_health(resource)
    assert (health.status, message_part in health.message) == (status, True), health


def test_health_does_not_modify_the_resource_or_depend_on_key_order() -> None:
    resource = probe(conditions=[NOT_STALLED, NOT_RECONCILING, READY])
    before = copy.deepcopy(resource)
    assert argocd_health(resource).status == "Healthy"
    assert resource == before


# --- health_test.yaml: Argo CD's own test cases for the check -------------------------------

HEALTH_TESTS = ARGOCD_CUSTOMIZATION / "health_test.yaml"
TESTDATA = ARGOCD_CUSTOMIZATION / "testdata"


def _health_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load(HEALTH_TESTS.read_text())["tests"]
    return cases


@pytest.mark.parametrize("case", _health_cases(), ids=lambda case: case["inputPath"])
def test_argocd_health_test_cases(case: dict[str, Any]) -> None:
    """As `argocd admin settings resource-overrides health` checks them: status and message
    exactly; and the object is one the CRD accepts."""
    resource = yaml.safe_load((ARGOCD_CUSTOMIZATION / case["inputPath"]).read_text())
    jsonschema.validate(resource, _crd_schema())
    health = argocd_health(resource)
    expected = case["healthStatus"]
    assert (health.status, health.message) == (expected["status"], expected["message"])


def test_argocd_health_test_cases_cover_every_testdata_object_and_state() -> None:
    cases = _health_cases()
    used = {case["inputPath"] for case in cases}
    assert used == {f"testdata/{p.name}" for p in TESTDATA.glob("*.yaml")}
    assert len(used) == len(cases)  # one case per object
    assert {case["healthStatus"]["status"] for case in cases} == {
        "Healthy",
        "Progressing",
        "Degraded",
        "Suspended",
    }
    # Argo CD finds the customization by group/kind from its path
    assert ARGOCD_CUSTOMIZATION.parts[-2:] == ("traceroute.dev", "TracerouteProbe")
    for path in TESTDATA.glob("*.yaml"):
        resource = yaml.safe_load(path.read_text())
        assert (resource["apiVersion"], resource["kind"]) == (
            "traceroute.dev/v1alpha1",
            "TracerouteProbe",
        ), path.name
