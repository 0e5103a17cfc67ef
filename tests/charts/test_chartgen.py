"""The chart's generated files are current, and its schema is closed at every level."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from devcluster.paths import CRD_SOURCE, RBAC_SOURCE, ROOT
from hack import chartgen


def test_chart_crd_is_a_copy_of_the_single_source() -> None:
    source = CRD_SOURCE.read_bytes()
    assert chartgen.CRD_COPY.read_bytes() == source, (
        "charts/traceroute-operator/crds/tracerouteprobes.yaml differs from "
        "crds/tracerouteprobes.yaml: run `make chart`"
    )


def test_chart_rbac_rules_are_a_copy_of_the_operators_own() -> None:
    assert chartgen.RBAC_COPY.read_bytes() == RBAC_SOURCE.read_bytes(), (
        "charts/traceroute-operator/files/operator-rbac.yaml differs from "
        "operator/traceroute_operator/data/rbac.yaml: run `make chart`"
    )


def test_generated_files_are_current() -> None:
    stale = [str(path.relative_to(ROOT)) for path in chartgen.stale_files()]
    assert stale == [], f"stale generated files {stale}: run `make chart`"


def _object_nodes(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every sub-schema that describes an object, with a JSON-pointer-ish location."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        types = node.get("type")
        is_object = types == "object" or (isinstance(types, list) and "object" in types)
        if is_object or "properties" in node:
            found.append((where, node))
        for key, value in node.items():
            # if/then only add constraints to an object that is closed where it is defined
            if key not in ("if", "then", "else"):
                found.extend(_object_nodes(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_object_nodes(value, f"{where}/{index}"))
    return found


def test_every_object_in_the_schema_rejects_unknown_keys() -> None:
    schema = json.loads(chartgen.SCHEMA.read_text())
    open_objects = []
    for where, node in _object_nodes(schema):
        closed = node.get("additionalProperties")
        # a fixed set of keys: false; a map (labels, node selector): a typed value schema
        if closed is False:
            continue
        if isinstance(closed, dict) and closed and "properties" not in node:
            continue
        open_objects.append(where)
    assert open_objects == []
    # the Kubernetes types came along (and are closed too, checked above)
    assert "io.k8s.api.core.v1.NodeAffinity" in schema["definitions"]


def test_schema_describes_exactly_the_keys_of_values_yaml() -> None:
    schema = json.loads(chartgen.SCHEMA.read_text())
    values = yaml.safe_load(chartgen.VALUES.read_text())

    def walk(data: dict[str, Any], node: dict[str, Any], path: str) -> None:
        properties = node.get("properties", {})
        assert set(data) == set(properties), (
            f"{path or '.'}: values {set(data)} schema {set(properties)}"
        )
        for key, value in data.items():
            child = properties[key]
            if isinstance(value, dict) and "properties" in child:
                walk(value, child, f"{path}.{key}" if path else key)

    walk(values, schema, "")


def test_every_value_is_documented_in_the_readme_table() -> None:
    values_text = chartgen.VALUES.read_text()
    documented = {doc.path for doc in chartgen.documented_values(values_text)}
    undocumented = [
        leaf
        for leaf in chartgen.leaf_paths(yaml.safe_load(values_text))
        if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert undocumented == []
    readme = chartgen.README.read_text()
    for path in documented:
        assert f"| `{path}` |" in readme


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# -- a\nx: 1\n", [("x", "a", 1)]),
        ("a:\n  # -- first\n  # more\n  b: [1]\n  c: 2\n", [("a.b", "first more", [1])]),
        ("# section\na:\n  # -- d\n  b: {}\n", [("a.b", "d", {})]),
        ("# -- orphan\n\nx: 1\n", []),
    ],
)
def test_documented_values_parser(text: str, expected: list[tuple[str, str, Any]]) -> None:
    docs = chartgen.documented_values(text)
    assert [(d.path, d.description, d.default) for d in docs] == expected
