"""Structure of crds/tracerouteprobes.yaml: names, bounds, descriptions, defaults, CEL.

The real apiserver proves the schema is accepted and enforced
(tests/operator/test_operator_controlplane.py, test_crd_validation_controlplane.py,
test_kstatus_controlplane.py); these checks keep the schema's conventions from eroding
field by field.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from traceroute_operator.spec import ProbeSpec
from traceroute_probe.metrics import RESERVED_LABELS

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "tracerouteprobes.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return doc


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    versions = crd["spec"]["versions"]
    assert len(versions) == 1
    only: dict[str, Any] = versions[0]
    return only


@pytest.fixture(scope="module")
def spec_schema(version: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, schema) of every node below and including ``schema``."""
    nodes = [(path, schema)]
    for key, child in (schema.get("properties") or {}).items():
        nodes += walk(child, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        nodes += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += walk(schema["additionalProperties"], f"{path}{{}}")
    return nodes


def test_names_and_scope(crd: dict[str, Any], version: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "tracerouteprobes.traceroute.dev"
    assert spec["group"] == "traceroute.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "TracerouteProbe"
    assert spec["names"]["plural"] == "tracerouteprobes"
    assert spec["names"]["shortNames"] == ["trp"]
    assert spec["names"]["categories"] == ["traceroute"]
    assert version["name"] == "v1alpha1"
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    for name in (
        "Targets",
        "Schedule",
        "Hops",
        "Reached",
        "Changes",
        "Last Run",
        "Last Change",
        "Ready",
        "Reason",
        "Age",
    ):
        assert name in columns, name
    assert columns["Reason"]["jsonPath"] == ".status.reason"
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Last Run"]["type"] == "date"
    assert columns["Changes"]["type"] == "integer"


def test_every_spec_field_has_a_description(spec_schema: dict[str, Any]) -> None:
    undocumented = [
        f"{path}.{key}"
        for path, node in walk(spec_schema, "spec")
        for key, child in (node.get("properties") or {}).items()
        if not child.get("description")
    ]
    assert undocumented == []


def test_every_spec_value_is_bounded(spec_schema: dict[str, Any]) -> None:
    unbounded = []
    for path, node in walk(spec_schema, "spec"):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            continue  # spec.affinity: the apiserver checks it as the core Affinity type
        kind = node.get("type")
        if node.get("x-kubernetes-int-or-string"):
            if "x-kubernetes-validations" not in node:
                unbounded.append(path)
        elif kind == "string":
            if "enum" not in node and "maxLength" not in node:
                unbounded.append(path)
        elif kind == "integer":
            if "minimum" not in node or "maximum" not in node:
                unbounded.append(path)
        elif kind == "array":
            if "maxItems" not in node:
                unbounded.append(path)
        elif kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []


def test_every_cel_rule_names_its_field(
    spec_schema: dict[str, Any], version: dict[str, Any]
) -> None:
    root = version["schema"]["openAPIV3Schema"]
    rules = [(p, r) for p, n in walk(root, "") for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 8
    for path, rule in rules:
        message = rule.get("message", "")
        assert message.startswith(("spec.", "metadata.")), (path, rule)


def test_cel_covers_the_cross_field_rules(spec_schema: dict[str, Any]) -> None:
    rules = " ".join(r["rule"] for r in spec_schema["x-kubernetes-validations"])
    assert "self.port" in rules and "self.protocol" in rules
    assert "expectedHopsByTarget" in rules
    schedule_rules = spec_schema["properties"]["schedule"]["x-kubernetes-validations"]
    assert any("matches" in r["rule"] for r in schedule_rules)
    labels_rules = spec_schema["properties"]["metricLabels"]["x-kubernetes-validations"]
    assert any("[a-zA-Z_]" in r["rule"] for r in labels_rules)


def _crd_default(spec_schema: dict[str, Any], dotted: str) -> Any:
    node = spec_schema
    for key in dotted.split("."):
        node = node["properties"][key]
    return node.get("default")


def test_crd_defaults_equal_the_operators_defaults(spec_schema: dict[str, Any]) -> None:
    """The operator reads specs that skipped the apiserver (render): same defaults."""
    parsed = ProbeSpec.from_dict({"targets": ["a.example"]})
    expected = {
        "schedule": parsed.schedule,
        "protocol": parsed.protocol,
        "ipFamily": parsed.ip_family,
        "maxHops": parsed.max_hops,
        "flows": parsed.flows,
        "probesPerHop": parsed.probes_per_hop,
        "timeoutSeconds": parsed.timeout_seconds,
        "packetsPerSecond": parsed.packets_per_second,
        "suspend": parsed.suspend,
        "pathChange.confirmRuns": parsed.confirm_runs,
    }
    for dotted, value in expected.items():
        assert _crd_default(spec_schema, dotted) == value, dotted
    # and every CRD default is one of those (no default the operator does not know)
    defaulted = {
        path.removeprefix("spec.")
        for path, node in walk(spec_schema, "spec")
        if "default" in node
        and "{" not in path
        and "[]" not in path
        and node.get("type") != "object"
    }
    assert defaulted - set(expected) <= {
        "pushgateway.tlsCA.key",
        "pushgateway.basicAuth.usernameKey",
        "pushgateway.basicAuth.passwordKey",
    }


def test_spec_fields_are_all_read_by_the_operator(spec_schema: dict[str, Any]) -> None:
    """Every top-level spec field has a ProbeSpec counterpart (no silently ignored knob)."""
    fields = {f.name for f in dataclasses.fields(ProbeSpec)}
    camel_to_field = {
        "targets": "targets",
        "schedule": "schedule",
        "timeZone": "time_zone",
        "protocol": "protocol",
        "port": "port",
        "ipFamily": "ip_family",
        "maxHops": "max_hops",
        "flows": "flows",
        "probesPerHop": "probes_per_hop",
        "timeoutSeconds": "timeout_seconds",
        "packetsPerSecond": "packets_per_second",
        "expectedHops": "expected_hops",
        "expectedHopsByTarget": "expected_hops_by_target",
        "pathChange": "confirm_runs",
        "suspend": "suspend",
        "pushgateway": "pushgateway",
        "metricLabels": "metric_labels",
        "image": "image",
        "imagePullPolicy": "image_pull_policy",
        "imagePullSecrets": "image_pull_secrets",
        "resources": "resources",
        "nodeSelector": "node_selector",
        "tolerations": "tolerations",
        "affinity": "affinity",
    }
    assert set(spec_schema["properties"]) == set(camel_to_field)
    assert set(camel_to_field.values()) == fields


def test_metric_labels_rule_reserves_exactly_the_probes_reserved_labels(
    spec_schema: dict[str, Any],
) -> None:
    """The CEL rule repeats the probe's list in YAML; it must not drift from it."""
    (rule,) = spec_schema["properties"]["metricLabels"]["x-kubernetes-validations"]
    listed = rule["rule"][rule["rule"].index("k in [") + len("k in [") :].split("]")[0]
    names = {name.strip().strip("'") for name in listed.split(",")}
    assert names == set(RESERVED_LABELS)
    for name in RESERVED_LABELS:
        assert name in rule["message"]


def test_status_defaults_to_an_unobserved_generation(version: dict[str, Any]) -> None:
    """kstatus reads a custom resource without status.observedGeneration as Current; the
    default makes a probe the operator has not acted on read InProgress
    (test_kstatus_controlplane.py shows it on the real apiserver)."""
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["default"] == {}
    assert status["properties"]["observedGeneration"]["default"] == 0
    # the only status default: the operator owns everything else in status
    defaulted = [path for path, node in walk(status, "status") if "default" in node]
    assert defaulted == ["status", "status.observedGeneration"]


def test_pushgateway_url_is_checked_by_the_cel_url_library(spec_schema: dict[str, Any]) -> None:
    url = spec_schema["properties"]["pushgateway"]["properties"]["url"]
    rules = [r["rule"] for r in url["x-kubernetes-validations"]]
    assert any("isURL(self)" in r and "getScheme()" in r for r in rules)
    assert any("getHostname() != ''" in r for r in rules)
    assert any("getPort()" in r and "65535" in r for r in rules)
    for rule in rules:
        # every url() call is guarded: an unparsable value gets the rule's message, not a
        # CEL evaluation error
        if "url(self)" in rule:
            assert rule.startswith(("isURL(self) &&", "!isURL(self) ||")), rule
        # the apiserver refuses the CRD when a regex or isIP() reads what url() returned
        # (its length is unbounded to the cost estimator): such checks read self
        for call in ("getHostname().matches", "getHost().matches", "isIP(url("):
            assert call not in rule, rule


def test_numeric_target_names_must_be_ip_addresses(spec_schema: dict[str, Any]) -> None:
    rules = [
        r["rule"] for r in spec_schema["properties"]["targets"]["items"]["x-kubernetes-validations"]
    ]
    assert len(rules) == 2
    assert all(rule.startswith("isIP(self) ||") for rule in rules)
