"""`traceroute-operator render` (offline, the real console script), configuration, verdict text."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from traceroute_operator.config import ENV_REFERENCE, ConfigError, OperatorConfig, SecretKeyRef
from traceroute_operator.pushgateway import group_url, verdict_exposition

from devcluster.chart import EXAMPLES, render_text
from devcluster.paths import ROOT

PROBES = """
apiVersion: traceroute.dev/v1alpha1
kind: TracerouteProbe
metadata: {name: edge, namespace: net}
spec:
  targets: [example.org]
  expectedHops: 7
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
apiVersion: traceroute.dev/v1alpha1
kind: TracerouteProbe
metadata: {name: core}
spec:
  targets: [192.0.2.1]
  protocol: udp
  port: 33434
"""


def render(
    tmp_path: Path, text: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "probes.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "traceroute_operator.cli", "render", "-f", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_render_prints_every_object(tmp_path: Path) -> None:
    done = render(tmp_path, PROBES, "-n", "team-a")
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    kinds = [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]
    assert ("CronJob", "net", "trp-edge") in kinds
    assert ("CronJob", "team-a", "trp-core") in kinds  # -n for probes without a namespace
    assert sum(1 for k in kinds if k[0] == "PrometheusRule") == 2
    assert sum(1 for k in kinds if k[0] == "ServiceMonitor") == 1  # shared, once
    dashboards = [o for o in objects if o["kind"] == "ConfigMap"]
    assert len(dashboards) >= 2
    assert all(o["metadata"]["labels"].get("grafana_dashboard") == "1" for o in dashboards)
    assert not any(o["metadata"]["name"] == "unrelated" for o in objects)


def test_render_respects_switches(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "TRACEROUTE_PROMETHEUSRULE_ENABLED": "false",
        "TRACEROUTE_SERVICEMONITOR_ENABLED": "false",
        "TRACEROUTE_DASHBOARDS_ENABLED": "false",
        "TRACEROUTE_PROBE_IMAGE": "mirror.example/probe:9",
    }
    done = render(tmp_path, PROBES, env=env)
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    assert {o["kind"] for o in objects} == {"CronJob"}
    images = {
        o["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
        for o in objects
    }
    assert images == {"mirror.example/probe:9"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: traceroute.dev/v1alpha1\nkind: TracerouteProbe\n"
            "metadata: {name: x}\nspec: {targets: [a], port: 80}\n",
            "spec.port",
        ),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no TracerouteProbe"),
        ("a: [", "cannot read"),
    ],
)
def test_render_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    done = render(tmp_path, text)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def render_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "traceroute_operator.cli", "render", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cronjobs(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [
        o["metadata"]["name"] for o in yaml.safe_load_all(done.stdout) if o["kind"] == "CronJob"
    ]


def test_piping_five_examples_renders_five_probes() -> None:
    assert len(EXAMPLES) == 5
    joined = "".join("---\n" + path.read_text() for path in EXAMPLES)
    names = cronjobs(render_cli("-f", "-", stdin=joined))
    assert len(names) == 5 and len(set(names)) == 5
    # cat without separators: refused, naming the document, nothing printed
    done = render_cli("-f", "-", stdin="".join(p.read_text() for p in EXAMPLES))
    assert done.returncode == 2 and done.stdout == ""
    assert "stdin#0: duplicate key 'apiVersion'" in done.stderr


def test_several_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "more.yaml").write_text(PROBES)
    names = cronjobs(render_cli("-f", str(ROOT / "examples"), "-f", str(tmp_path / "more.yaml")))
    assert len(names) == 7 and {"trp-edge", "trp-core"} <= set(names)


def test_every_document_that_cannot_be_rendered_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        PROBES + "---\napiVersion: traceroute.dev/v1alpha1\nkind: TracerouteProbe\n"
        "metadata: {name: p}\nspec: {targets: [a], port: 80}\n"
        "---\napiVersion: traceroute.dev/v1beta9\nkind: TracerouteProbe\nmetadata: {name: q}\n"
        "---\n- just a list\n"
        "---\napiVersion: traceroute.dev/v1alpha1\nkind: TracerouteProbe\n"
        "metadata: {name: edge, namespace: net}\nspec: {targets: [b]}\n"
    )
    done = render_cli("-f", str(bad))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 4, done.stderr
    assert f"{bad}#3 (TracerouteProbe p): spec.port" in lines[0]
    assert f"{bad}#4 (TracerouteProbe q): expected apiVersion traceroute.dev/v1alpha1" in lines[1]
    assert f"{bad}#5: not an object" in lines[2]
    assert f"{bad}#6 (TracerouteProbe edge): the same probe as {bad}#0" in lines[3]


def test_render_with_the_charts_manifests_uses_the_charts_settings(tmp_path: Path) -> None:
    manifests = tmp_path / "chart.yaml"
    manifests.write_text(render_text(namespace="tr-system"))
    done = render_cli("--operator-manifests", str(manifests), "-f", "-", "-n", "net", stdin=PROBES)
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    cronjob = next(o for o in objects if o["kind"] == "CronJob")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    pushgateway = args[args.index("--pushgateway") + 1]
    assert pushgateway == "http://trop-traceroute-operator-pushgateway.tr-system.svc:9091"
    dashboards = {o["metadata"]["namespace"] for o in objects if o["kind"] == "ConfigMap"}
    assert dashboards == {"tr-system"}  # the release namespace, not the built-in default
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert [m["metadata"]["namespace"] for m in monitors] == ["tr-system"]


def test_the_charts_manifests_need_one_operator_deployment(tmp_path: Path) -> None:
    (tmp_path / "probes.yaml").write_text(PROBES)
    done = render_cli(
        "--operator-manifests", str(tmp_path / "probes.yaml"), "-f", "-", stdin=PROBES
    )
    assert done.returncode == 2 and "expected one operator Deployment" in done.stderr


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {
            "TRACEROUTE_WATCH_NAMESPACES": "b, a ,,a",
            "TRACEROUTE_PUSHGATEWAY_URL": "https://pgw:9091",
            "TRACEROUTE_PUSHGATEWAY_CA_SECRET": "pgw-ca/root.pem",
            "TRACEROUTE_OPERATOR_NAMESPACE": "tr-system",
            "TRACEROUTE_WORKERS": "8",
            "TRACEROUTE_LIVENESS_ENDPOINT": "",
            "TRACEROUTE_DASHBOARDS_NAMESPACE": "grafana",
        }
    )
    assert config.watch_namespaces == ("a", "b") and not config.clusterwide
    assert config.default_pushgateway_url == "https://pgw:9091"
    assert config.pushgateway_ca_secret == SecretKeyRef("pgw-ca", "root.pem")
    assert config.operator_namespace == config.monitoring.operator_namespace == "tr-system"
    assert config.monitoring.dashboards_namespace == "grafana"
    assert config.workers == 8 and config.liveness_endpoint is None
    assert OperatorConfig.from_env({}).clusterwide


@pytest.mark.parametrize(
    "env",
    [
        {"TRACEROUTE_WORKERS": "0"},
        {"TRACEROUTE_METRICS_PORT": "http"},
        {"TRACEROUTE_PUSHGATEWAY_URL": "pgw:9091"},
        {"TRACEROUTE_PROBE_IMAGE_PULL_POLICY": "Sometimes"},
        {"TRACEROUTE_SERVICEMONITOR_ENABLED": "maybe"},
    ],
)
def test_bad_config_is_refused_with_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        OperatorConfig.from_env(env)
    assert "TRACEROUTE_" in str(info.value) or "setting" in str(info.value)


def test_env_reference_lists_every_variable_from_env_reads() -> None:
    source = (
        Path(__file__).resolve().parents[2] / "operator/traceroute_operator/config.py"
    ).read_text()
    read = {
        "TRACEROUTE_" + n
        for n in re.findall(r'"([A-Z_]+)"', source.split("ENV_REFERENCE")[0])
        if n != "TRACEROUTE_"
    }
    documented = {row[0] for row in ENV_REFERENCE}
    assert read - {"TRACEROUTE_PROBE_GID"} <= documented


def test_verdict_exposition_and_group_url() -> None:
    text = verdict_exposition(
        [
            {"name": "a.example", "pathChanges": 2, "lastChangeTime": "2025-11-24T14:00:00.000Z"},
            {"name": 'we"ird', "pathChanges": 0},
        ],
        {"team": "net"},
    )
    assert 'traceroute_path_changes_total{team="net",target="a.example"} 2' in text
    assert 'traceroute_path_changes_total{team="net",target="we\\"ird"} 0' in text
    assert (
        "traceroute_path_last_change_timestamp_seconds"
        '{team="net",target="a.example"} 1763992800.000' in text
    )
    assert "# TYPE traceroute_path_changes_total counter" in text
    assert group_url("http://pgw:9091/", "traceroute", "net", "edge") == (
        "http://pgw:9091/metrics/job/traceroute/namespace/net/probe/edge"
    )
