"""Rendering the chart with the real helm binary, for the chart tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from devcluster.kubetools import HELM
from devcluster.paths import CHART, ROOT

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
ARGOCD_CUSTOMIZATION = (
    CHART / "argocd" / "resource_customizations" / "traceroute.dev" / "TracerouteProbe"
)
ARGOCD_HEALTH = ARGOCD_CUSTOMIZATION / "health.lua"
RELEASE_NAMESPACE = "traceroute-system"


def helm_cmd(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """helm without a cluster (lint, template): no kubeconfig is read."""
    return subprocess.run(
        [str(HELM), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": "/nonexistent",
            "HELM_CACHE_HOME": "/tmp/trop-helm/cache",
            "HELM_CONFIG_HOME": "/tmp/trop-helm/config",
            "HELM_DATA_HOME": "/tmp/trop-helm/data",
        },
    )


def template_args(
    values_files: Iterable[Path] = (),
    set_values: Mapping[str, str] | None = None,
    *,
    release: str = "trop",
    namespace: str = RELEASE_NAMESPACE,
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", "1.36.3"]
    for path in values_files:
        args += ["--values", str(path)]
    for key, value in (set_values or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def render_text(
    values_files: Iterable[Path] = (),
    set_values: Mapping[str, str] | None = None,
    *,
    release: str = "trop",
    namespace: str = RELEASE_NAMESPACE,
    include_crds: bool = False,
) -> str:
    args = template_args(values_files, set_values, release=release, namespace=namespace)
    if include_crds:
        args.append("--include-crds")
    return helm_cmd(args).stdout


def render(
    values_files: Iterable[Path] = (),
    set_values: Mapping[str, str] | None = None,
    *,
    release: str = "trop",
    namespace: str = RELEASE_NAMESPACE,
    include_crds: bool = False,
) -> list[dict[str, Any]]:
    text = render_text(
        values_files, set_values, release=release, namespace=namespace, include_crds=include_crds
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_error(set_values: Mapping[str, str], values_files: Iterable[Path] = ()) -> str:
    """stderr of a render that must fail (schema or `fail`/`required` in a template)."""
    result = helm_cmd(template_args(values_files, set_values), check=False)
    assert result.returncode != 0, f"helm template accepted {dict(set_values)}"
    return result.stderr


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: Iterable[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def operator_deployment(docs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    deployments = [
        d
        for d in by_kind(docs, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    assert len(deployments) == 1
    return deployments[0]


def operator_environment(docs: Iterable[dict[str, Any]], namespace: str) -> dict[str, str]:
    """The operator container's environment as the kubelet would give it."""
    container = operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = namespace
        else:
            raise AssertionError(f"unexpected env source {item}")
    return env


def load_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    return data or {}
