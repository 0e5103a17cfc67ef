"""Generated parts of the Helm chart, kept in the repository and checked by the tests.

    python -m hack.chartgen write   # after editing values.yaml or crds/
    python -m hack.chartgen check   # exit 1 when a generated file is stale

Generated:
- charts/traceroute-operator/crds/tracerouteprobes.yaml: a byte copy of
  crds/tracerouteprobes.yaml (the single source; Helm cannot read files outside the chart).
- charts/traceroute-operator/files/operator-rbac.yaml: a byte copy of the operator's
  data/rbac.yaml, the rules the chart's (Cluster)Roles grant.
- charts/traceroute-operator/values.schema.json: the chart's own keys written out below;
  the Kubernetes types a user passes through (resources, affinity, tolerations, env) are
  the upstream strict schemas of kubernetes-validate, so every object, also deep inside
  an affinity, rejects unknown keys.
- the values table in charts/traceroute-operator/README.md, from the `# --` comments of
  values.yaml (helm-docs style).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from traceroute_operator.monitoring import settings as monitoring_settings
from traceroute_operator.monitoring.settings import ALERT_NAMES

from devcluster.paths import CHART, CRD_SOURCE, RBAC_SOURCE, ROOT

CRD_COPY = CHART / "crds" / "tracerouteprobes.yaml"
# RBAC_SOURCE is what the operator does, as RBAC rules: written by the operator's authors
# next to its code (and used by its own tests), granted by the chart.
RBAC_COPY = CHART / "files" / "operator-rbac.yaml"
SCHEMA = CHART / "values.schema.json"
VALUES = CHART / "values.yaml"
README = CHART / "README.md"
TABLE_BEGIN = "<!-- values-table:begin (generated: python -m hack.chartgen write) -->"
TABLE_END = "<!-- values-table:end -->"

# The Kubernetes release whose API types the schema embeds (the chart's test control plane).
K8S_SCHEMA_VERSION = "1.36.0"

# Label keys/values and names as the apiserver checks them.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# the operator's own checks of its settings: helm rejects what the operator would
DNS_LABEL = monitoring_settings.DNS_LABEL.pattern
DNS_SUBDOMAIN = monitoring_settings.DNS_SUBDOMAIN.pattern
PROM_LABEL_NAME = monitoring_settings.PROM_LABEL_NAME.pattern
PROM_DURATION = monitoring_settings.PROM_DURATION.pattern
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
REGISTRY = r"^$|^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[a-z0-9._-]+)*$"
REPOSITORY = r"^[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$"
TAG = r"^$|^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
DIGEST = r"^$|^sha256:[a-f0-9]{64}$"
URL = r"^$|^https?://[^\s/?#]+(/[^\s]*)?$"
URL_PREFIX = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"
# registry[:port]/path[/], optionally with :tag or @digest (trust.image_matches)
IMAGE_PREFIX = r"^[A-Za-z0-9][-A-Za-z0-9.]*(:[0-9]{1,5})?(/[a-z0-9._-]+)*/?([:@][A-Za-z0-9_.:-]+)?$"


# --- schema building blocks -------------------------------------------------------------------


def obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object with exactly these keys (helm rejects a typo instead of ignoring it)."""
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


def string(pattern: str | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **extra}
    if pattern:
        schema["pattern"] = pattern
    return schema


def integer(minimum: int, maximum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def port() -> dict[str, Any]:
    return integer(1, 65535)


def boolean() -> dict[str, Any]:
    return {"type": "boolean"}


def string_map(
    key_pattern: str | None = None, value_schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A map of strings (labels, annotations, node selector)."""
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": value_schema or {"type": "string"},
    }
    if key_pattern:
        schema["propertyNames"] = {"pattern": key_pattern}
    return schema


def labels() -> dict[str, Any]:
    return string_map(LABEL_KEY, string(LABEL_VALUE, maxLength=63))


def k8s(type_name: str) -> dict[str, Any]:
    return {"$ref": f"#/definitions/{type_name}"}


def image(tag_required: bool = False) -> dict[str, Any]:
    tag = string(TAG)
    if tag_required:
        tag = string(TAG[len("^$|") :])
    return obj(
        {
            "registry": string(REGISTRY),
            "repository": string(REPOSITORY, minLength=1),
            "tag": tag,
            "digest": string(DIGEST),
        },
        required=["registry", "repository", "tag", "digest"],
    )


def pod_placement() -> dict[str, Any]:
    return {
        "nodeSelector": string_map(LABEL_KEY),
        "tolerations": {"type": "array", "items": k8s("io.k8s.api.core.v1.Toleration")},
        "affinity": k8s("io.k8s.api.core.v1.Affinity"),
    }


def chart_schema() -> dict[str, Any]:
    """The schema of values.yaml, without descriptions (added from the comments)."""
    operator = obj(
        {
            "image": image(),
            "watchNamespaces": {
                "type": "array",
                "uniqueItems": True,
                "items": string(DNS_LABEL),
            },
            "verbose": boolean(),
            "livenessPort": port(),
            "livenessProbe": obj(
                {
                    "initialDelaySeconds": integer(0),
                    "periodSeconds": integer(1),
                    "timeoutSeconds": integer(1),
                    "failureThreshold": integer(1),
                }
            ),
            "resources": k8s("io.k8s.api.core.v1.ResourceRequirements"),
            "podAnnotations": string_map(LABEL_KEY),
            "podLabels": labels(),
            **pod_placement(),
            "priorityClassName": {"anyOf": [{"const": ""}, string(DNS_SUBDOMAIN)]},
            "workers": integer(1, 256),
            "resyncSeconds": {"type": "number", "minimum": 0},
            "extraEnv": {"type": "array", "items": k8s("io.k8s.api.core.v1.EnvVar")},
        }
    )
    pushgateway = obj(
        {
            "enabled": boolean(),
            "url": string(URL),
            "allowedURLs": {
                "type": "array",
                "uniqueItems": True,
                "items": string(URL_PREFIX),
            },
            "shards": integer(1, 64),
            "shardURLs": {"type": "array", "uniqueItems": True, "items": string(URL)},
            "image": image(tag_required=True),
            "expectedProbes": integer(1, 1_000_000),
            "resources": k8s("io.k8s.api.core.v1.ResourceRequirements"),
            "service": obj(
                {
                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "port": port(),
                    "annotations": string_map(LABEL_KEY),
                }
            ),
            "persistence": obj(
                {
                    "enabled": boolean(),
                    "size": string(QUANTITY),
                    "storageClassName": string(),
                    "existingClaim": {"anyOf": [{"const": ""}, string(DNS_SUBDOMAIN)]},
                    "interval": string(PROM_DURATION),
                }
            ),
            **pod_placement(),
            "tls": obj(
                {
                    "caSecretName": {"anyOf": [{"const": ""}, string(DNS_SUBDOMAIN)]},
                    "caKey": string(r"^[-._a-zA-Z0-9]+$"),
                }
            ),
            "basicAuth": obj({"secretName": {"anyOf": [{"const": ""}, string(DNS_SUBDOMAIN)]}}),
            "externalService": obj(
                {
                    "namespace": string(DNS_LABEL),
                    "name": string(DNS_LABEL),
                    "port": port(),
                    "portName": string(r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$"),
                    "selector": {**labels(), "minProperties": 1},
                }
            ),
        },
        # An external Pushgateway needs its URL (or the URLs of its shards).
        allOf=[
            {
                "if": {
                    "properties": {
                        "enabled": {"const": False},
                        "shardURLs": {"maxItems": 0},
                    }
                },
                "then": {"properties": {"url": {"minLength": 1}}},
            }
        ],
    )
    monitor = obj({"enabled": boolean(), "interval": string(PROM_DURATION), "labels": labels()})
    monitoring = obj(
        {
            "additionalLabels": labels(),
            "serviceMonitor": obj(
                {"enabled": boolean(), "labels": labels(), "interval": string(PROM_DURATION)}
            ),
            "prometheusRule": obj(
                {
                    "enabled": boolean(),
                    "labels": labels(),
                    "alertLabels": string_map(PROM_LABEL_NAME),
                    "severities": {
                        "type": "object",
                        "propertyNames": {"enum": list(ALERT_NAMES)},
                        "additionalProperties": string(r"^[A-Za-z0-9_-]+$"),
                    },
                    "destinationLossThreshold": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "exclusiveMaximum": 1,
                    },
                    "confirmRuns": integer(1, 100),
                    "staleMultiplier": {"type": "number", "minimum": 1},
                    "changeAlertWindowSeconds": integer(60),
                }
            ),
            "dashboards": obj(
                {
                    "enabled": boolean(),
                    "namespace": {"anyOf": [{"const": ""}, string(DNS_LABEL)]},
                    "label": string(LABEL_KEY),
                    "labelValue": string(LABEL_VALUE, maxLength=63),
                    "folder": string(minLength=1),
                    "folderAnnotation": string(LABEL_KEY),
                }
            ),
        }
    )
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the traceroute-operator chart",
        **obj(
            {
                "nameOverride": string(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=63),
                "fullnameOverride": string(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=63),
                "crds": obj({"template": boolean()}),
                "image": obj(
                    {
                        "registry": string(REGISTRY),
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    }
                ),
                "imagePullSecrets": {
                    "type": "array",
                    "items": obj({"name": string(DNS_SUBDOMAIN)}, required=["name"]),
                },
                "operator": operator,
                "serviceAccount": obj(
                    {
                        "create": boolean(),
                        "name": {"anyOf": [{"const": ""}, string(DNS_SUBDOMAIN)]},
                        "annotations": string_map(LABEL_KEY),
                    }
                ),
                "rbac": obj(
                    {
                        "create": boolean(),
                        "aggregateToDefaultRoles": boolean(),
                        "secretNamespaces": {
                            "type": "array",
                            "uniqueItems": True,
                            "items": string(DNS_LABEL),
                        },
                    }
                ),
                "uninstall": obj({"hook": boolean(), "timeoutSeconds": integer(10, 3600)}),
                "probe": obj(
                    {
                        "image": image(),
                        "allowedImages": {
                            "type": "array",
                            "uniqueItems": True,
                            "items": string(IMAGE_PREFIX),
                        },
                        "imagePullSecrets": {
                            "type": "array",
                            "uniqueItems": True,
                            "items": string(DNS_SUBDOMAIN),
                        },
                        # Only what the operator's defaults for probe pods cover.
                        "resources": obj(
                            {
                                "requests": obj(
                                    {"cpu": string(QUANTITY), "memory": string(QUANTITY)},
                                    required=["cpu", "memory"],
                                ),
                                "limits": obj({"memory": string(QUANTITY)}, required=["memory"]),
                            },
                            required=["requests", "limits"],
                        ),
                        "successfulJobsHistoryLimit": integer(0, 100),
                        "failedJobsHistoryLimit": integer(0, 100),
                    }
                ),
                "pushgateway": pushgateway,
                "metrics": obj(
                    {
                        "port": port(),
                        "service": obj(
                            {"enabled": boolean(), "annotations": string_map(LABEL_KEY)}
                        ),
                        "serviceMonitor": monitor,
                        "podMonitor": monitor,
                    }
                ),
                "monitoring": monitoring,
            }
        ),
    }


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(value.rsplit("/", 1)[-1])
            else:
                found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                f"#/definitions/{value.rsplit('/', 1)[-1]}"
                if key == "$ref" and isinstance(value, str)
                else _rewrite_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(value) for value in node]
    return node


def kubernetes_definitions(names: list[str]) -> dict[str, Any]:
    """The named upstream types and everything they reference (strict variant)."""
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = base / f"v{K8S_SCHEMA_VERSION}-local-strict" / "_definitions.json"
    upstream: dict[str, Any] = json.loads(path.read_text())["$defs"]
    wanted: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted[name] = _rewrite_refs(upstream[name])
        todo.extend(_refs(upstream[name]))
    return dict(sorted(wanted.items()))


# --- values.yaml comments ---------------------------------------------------------------------


@dataclass(frozen=True)
class ValueDoc:
    path: str  # dotted key path, e.g. "operator.image.tag"
    description: str
    default: Any


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def documented_values(values_text: str) -> list[ValueDoc]:
    """Keys preceded by a `# -- description` comment, in file order, with their defaults."""
    data = yaml.safe_load(values_text)
    docs: list[ValueDoc] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[len("# --") :].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = _KEY_LINE.match(line)
        if not match:
            pending = None if not stripped else pending
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            path = ".".join(key for _, key in stack)
            docs.append(ValueDoc(path, " ".join(pending), _lookup(data, path)))
            pending = None
    return docs


def _lookup(data: Any, path: str) -> Any:
    for key in path.split("."):
        data = data[key]
    return data


def leaf_paths(data: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf (scalars, lists, empty maps) of a values tree."""
    if isinstance(data, dict) and data:
        paths: list[str] = []
        for key, value in data.items():
            paths.extend(leaf_paths(value, f"{prefix}.{key}" if prefix else key))
        return paths
    return [prefix]


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for key in path.split("."):
        node = node["properties"][key]
    return node


def with_descriptions(schema: dict[str, Any], docs: list[ValueDoc]) -> dict[str, Any]:
    for doc in docs:
        node = _schema_at(schema, doc.path)
        if "$ref" in node:
            # draft-07 ignores siblings of $ref; wrap so the description shows in editors
            ref = dict(node)
            node.clear()
            node["allOf"] = [ref]
        node["description"] = doc.description
    return schema


def build_schema(values_text: str) -> dict[str, Any]:
    schema = with_descriptions(chart_schema(), documented_values(values_text))
    schema["definitions"] = kubernetes_definitions(sorted(set(_refs(schema))))
    return schema


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def values_table(values_text: str) -> str:
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for doc in documented_values(values_text):
        default = json.dumps(doc.default, separators=(",", ":"))
        description = doc.description.replace("|", "\\|")
        rows.append(f"| `{doc.path}` | {_type_name(doc.default)} | `{default}` | {description} |")
    return "\n".join(rows)


def readme_with_table(readme_text: str, values_text: str) -> str:
    begin = readme_text.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    end = readme_text.index(TABLE_END)
    return readme_text[:begin] + "\n" + values_table(values_text) + "\n" + readme_text[end:]


# --- command ---------------------------------------------------------------------------------


def expected_files() -> dict[Path, bytes]:
    values_text = VALUES.read_text()
    files = {
        SCHEMA: (json.dumps(build_schema(values_text), indent=2) + "\n").encode(),
        README: readme_with_table(README.read_text(), values_text).encode(),
    }
    for source, copy in ((CRD_SOURCE, CRD_COPY), (RBAC_SOURCE, RBAC_COPY)):
        if source.exists():
            files[copy] = source.read_bytes()
    return files


def stale_files() -> list[Path]:
    return [
        path
        for path, content in expected_files().items()
        if not path.exists() or path.read_bytes() != content
    ]


def main(argv: list[str]) -> int:
    if argv not in (["write"], ["check"]):
        print("usage: python -m hack.chartgen write|check", file=sys.stderr)
        return 2
    if argv == ["check"]:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run: python -m hack.chartgen write)")
        return 1 if stale else 0
    for path, content in expected_files().items():
        if not path.exists() or path.read_bytes() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
