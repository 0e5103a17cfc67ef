"""The generated alerts and dashboards against a real Pushgateway and Prometheus.

Probe runs happen in the network lab (a diamond: two disjoint routes, flipped at run
time) and push to the real Pushgateway; the operator's own code turns each run's
termination message into its ECMP-aware verdict (pathchange.observe) and pushes
that (pushgateway.verdict_exposition/push_verdict), as the operator does. Prometheus
scrapes with honor_labels and evaluates the generated PrometheusRule.

Proves: every query of every dashboard panel (and every variable and annotation)
returns data; the per-hop table and the node graph show the lab's real path;
TraceroutePathChanged fires in Prometheus' own rule evaluation after the route flip;
deleting the probe's Pushgateway groups removes its series.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from traceroute_operator.monitoring import MonitoringSettings, build_prometheusrule
from traceroute_operator.monitoring.dashboards import build_dashboards
from traceroute_operator.pathchange import DetectionState, observe, trace_from_path
from traceroute_operator.pushgateway import (
    PushgatewayEndpoint,
    delete_groups,
    push_verdict,
    verdict_exposition,
)
from traceroute_operator.results import RunReport, parse_termination_message
from traceroute_operator.status import iso

from devcluster.lab import Lab, Topology
from devcluster.promstack import Prometheus, Pushgateway
from devcluster.runtime import VENV_BIN, local_session
from tests.fixtures.lab import LabFactory
from tests.operator.probes import parsed

pytestmark = pytest.mark.slow

CONFIRM_RUNS = 2
PROBE_UID = 65534


def probe_cli() -> str:
    """The real probe CLI of this checkout's venv (TROP_VENV), as installed by `make env`."""
    found = shutil.which("traceroute-probe", path=f"{VENV_BIN}:/usr/local/bin:/usr/bin")
    if found is None:
        raise FileNotFoundError("traceroute-probe not installed: run `make env`")
    return found


@dataclass
class ProbeUnderTest:
    """One TracerouteProbe's runs in the lab plus the operator's verdict on them."""

    lab: Lab
    pushgateway: Pushgateway
    namespace: str
    name: str
    target: str
    workdir: Path
    expected_hops: int
    protocol: str = "icmp"
    flows: int = 3
    state: DetectionState = field(default_factory=DetectionState)
    path_changes: int = 0
    last_change: float | None = None
    results: list[Any] = field(default_factory=list)

    def run(self) -> RunReport:
        """One probe run in the lab; then the operator's verdict, pushed."""
        result = self._run_cli(probe_cli())
        (target,) = result.targets
        assert target.path is not None
        trace = trace_from_path([sorted(h) for h in target.path], target.hops, target.reached)
        self.results.append(target)
        self.state, change = observe(self.state, trace, CONFIRM_RUNS, self.target)
        if change is not None:
            self.path_changes += 1
            self.last_change = result.timestamp
        status_target: dict[str, Any] = {"name": self.target, "pathChanges": self.path_changes}
        if self.last_change is not None:
            status_target["lastChangeTime"] = iso(self.last_change)
        push_verdict(
            PushgatewayEndpoint(self.pushgateway.url),
            self.namespace,
            self.name,
            verdict_exposition([status_target], {}),
        )
        return result

    def _run_cli(self, cli: str) -> RunReport:
        log = self.workdir / f"termination-{uuid.uuid4().hex[:6]}"
        log.touch()
        log.chmod(0o666)
        proc = self.lab.run(
            "probe",
            [
                cli,
                *("--namespace", self.namespace, "--probe", self.name),
                *("--pushgateway", self.pushgateway.url, "--protocol", self.protocol),
                *("--flows", str(self.flows)),
                *("--expected-hops", str(self.expected_hops)),
                *("--termination-log", str(log), "--timeout", "5"),
                self.target,
            ],
            user=PROBE_UID,
            group=PROBE_UID,
            timeout=30,
        )
        assert proc.returncode in (0, 1), f"probe failed ({proc.returncode}): {proc.stderr}"
        return parse_termination_message(log.read_text())


# --- dashboard queries -------------------------------------------------------------


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    expr = expr.replace("$__range", "1h").replace("$__rate_interval", "1m")
    return expr.replace("$__interval", "15s")


def run_query(prom: Prometheus, expr: str, *, instant: bool) -> list[dict[str, Any]]:
    if instant:
        return prom.query(expr)
    end = time.time()
    response = local_session().get(
        f"{prom.url}/api/v1/query_range",
        params={"query": expr, "start": str(end - 300), "end": str(end), "step": "1"},
        timeout=10,
    )
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def label_values_query(query: str) -> tuple[str, str]:
    """Grafana's label_values(selector, label) as PromQL giving the same values."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
    assert match, query
    return f"count by ({match[2]}) ({match[1]})", match[2]


def check_dashboard_returns_data(
    prom: Prometheus,
    dashboard: dict[str, Any],
    variables: dict[str, str],
    *,
    path_changed: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Every variable, panel target and annotation query returns data; results by title.

    The path-change annotation has data exactly when a path change happened."""
    results: dict[str, list[dict[str, Any]]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        promql, label = label_values_query(substitute(variable["query"], variables))
        values = {r["metric"].get(label) for r in prom.query(promql)}
        wanted = variables[variable["name"]]
        assert wanted in values or (wanted == ".*" and values), (
            f"{dashboard['uid']}: variable {variable['name']} offers {values}"
        )
    empty = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets") or []:
            expr = substitute(target["expr"], variables)
            result = run_query(prom, expr, instant=bool(target.get("instant")))
            results[f"{panel['title']}/{target['refId']}"] = result
            if not result:
                empty.append(f"{panel['title']} ({target['refId']}): {expr}")
    for annotation in dashboard["annotations"]["list"]:
        expr = substitute(annotation["expr"], variables)
        has_data = bool(run_query(prom, expr, instant=False))
        if not has_data and path_changed:
            empty.append(f"annotation {annotation['name']}: {expr}")
        assert path_changed or not has_data, f"annotation without a path change: {expr}"
    assert not empty, f"{dashboard['uid']}: queries without data:\n" + "\n".join(empty)
    return results


# --- the test ------------------------------------------------------------------------


@pytest.fixture
def probe_workdir() -> Iterator[Path]:
    """A directory uid 65534 can write to (pytest's tmp_path parents are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="trop-obs-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def rules_loaded(prometheus: Prometheus) -> Iterator[list[Path]]:
    files: list[Path] = []
    yield files
    prometheus.reload(rule_files=[])


def monitored_probe(
    lab: Lab,
    pushgateway: Pushgateway,
    prometheus: Prometheus,
    rules_loaded: list[Path],
    workdir: Path,
    **probe_options: Any,
) -> ProbeUnderTest:
    """A probe in the lab whose generated PrometheusRule Prometheus evaluates."""
    lab.attach_cluster_network("probe")
    # Runs follow each other within seconds here, not minutes: without this the
    # routers' ICMP rate limits (6 tokens, 1/s) silence most hops of the next run.
    lab.lift_icmp_ratelimits(burst=1000)
    namespace = f"obs-{uuid.uuid4().hex[:8]}"
    target = lab.addr("target")
    probe = ProbeUnderTest(lab, pushgateway, namespace, "web", target, workdir, **probe_options)
    spec = {
        "metadata": {"name": probe.name, "namespace": namespace},
        "spec": {
            "schedule": "* * * * *",
            "targets": [target],
            "expectedHops": probe.expected_hops,
        },
    }
    rule = build_prometheusrule(*parsed(spec), MonitoringSettings())
    rule_file = workdir / "rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    rules_loaded.append(rule_file)
    prometheus.reload(rule_files=[rule_file])
    prometheus.wait_for_healthy_targets()
    return probe


def alerts_of(prometheus: Prometheus, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        a
        for a in prometheus.alerts()
        if a["labels"]["alertname"] == name and a["labels"].get("namespace") == namespace
    ]


def test_alerts_and_dashboards_on_real_prometheus(  # noqa: PLR0915 (one lab scenario, set up once: splitting it would rebuild the lab per step)
    lab_factory: LabFactory,
    pushgateway: Pushgateway,
    prometheus: Prometheus,
    rules_loaded: list[Path],
    probe_workdir: Path,
) -> None:
    lab = lab_factory(Topology.diamond(a_routers=2, b_routers=3))
    path_a = lab.truth("probe", "target")
    probe = monitored_probe(
        lab, pushgateway, prometheus, rules_loaded, probe_workdir, expected_hops=len(path_a)
    )
    namespace, target = probe.namespace, probe.target

    sel = f'namespace="{namespace}", probe="web"'
    assert probe.run().targets[0].reached
    # A router on the route goes silent for two runs: a wildcard, not a path change
    lab.silence("a1")
    silent_ttl = next(ttl for ttl, ip in enumerate(path_a, 1) if lab.node_of(ip) == "a1")
    for _ in range(CONFIRM_RUNS):
        result = probe.run()
        (traced,) = result.targets
        assert traced.reached and traced.path is not None
        assert traced.path[silent_ttl - 1] == frozenset(), traced.path
    lab.unsilence("a1")
    prometheus.wait_for(f"traceroute_path_changes_total{{{sel}}} == 0", timeout=30)
    prometheus.wait_for(f"traceroute_hops{{{sel}}} == {len(path_a)}", timeout=30)
    prometheus.wait_for(
        f'count(traceroute_edge_info{{{sel}, to="*{silent_ttl}"}})', bool, timeout=30
    )
    assert probe.path_changes == 0
    # the mtr-like table shows the silent TTL as '*' with 100% loss, like mtr's ???
    dashboards = build_dashboards()
    drill_vars = {"datasource": "prom", "namespace": namespace, "probe": "web", "target": target}
    hop_table = next(
        p for p in dashboards["traceroute-probe"]["panels"] if p["title"] == "Hops (latest run)"
    )
    (loss_query,) = [t for t in hop_table["targets"] if t["refId"] == "A"]
    rows = prometheus.query(substitute(loss_query["expr"], drill_vars))
    silent_rows = [r for r in rows if r["metric"]["ttl"] == str(silent_ttl)]
    assert silent_rows, rows
    assert {(r["metric"]["ip"], float(r["value"][1])) for r in silent_rows} == {("*", 1.0)}
    assert not alerts_of(prometheus, namespace, "TraceroutePathChanged")

    # the route flips to the longer branch; the operator confirms it over two runs
    lab.use_path("b")
    path_b = lab.truth("probe", "target")
    assert len(path_b) == len(path_a) + 1
    for _ in range(CONFIRM_RUNS):
        probe.run()
    assert probe.path_changes == 1

    # Prometheus' own rule evaluation: the alert fires for this probe and target
    deadline = time.monotonic() + 60
    firing: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not firing:
        firing = [
            a
            for a in alerts_of(prometheus, namespace, "TraceroutePathChanged")
            if a["state"] == "firing"
        ]
        time.sleep(0.5)
    assert firing, f"TraceroutePathChanged did not fire: {prometheus.alerts()}"
    (alert,) = firing
    assert alert["labels"]["target"] == target and alert["labels"]["probe"] == "web"
    assert f"hop count now: {len(path_b)}" in alert["annotations"]["description"]
    assert "Path changes so far: 1" in alert["annotations"]["description"]
    # hops != expectedHops is evaluated too (pending until its `for:` has passed)
    mismatch = alerts_of(prometheus, namespace, "TracerouteHopCountChanged")
    assert mismatch and mismatch[0]["labels"]["reason"] == "expected_mismatch"

    # every query of every panel returns data, on both dashboards
    drill = check_dashboard_returns_data(prometheus, dashboards["traceroute-probe"], drill_vars)
    check_dashboard_returns_data(
        prometheus,
        dashboards["traceroute-overview"],
        {"datasource": "prom", "namespace": namespace, "probe": ".*", "target": ".*"},
    )

    # the mtr-like table shows the lab's current route, hop by hop
    table_rows = drill["Hops (latest run)/C"]
    by_ttl: dict[int, set[str]] = {}
    for row in table_rows:
        by_ttl.setdefault(int(row["metric"]["ttl"]), set()).add(row["metric"]["ip"])
    assert [by_ttl[ttl] for ttl in sorted(by_ttl)] == [{ip} for ip in path_b], (
        f"table {by_ttl}, lab route {path_b}, runs {probe.results}"
    )
    # the node graph's edges chain origin -> ... -> target along that route
    edges = {r["metric"]["source"]: r["metric"]["target"] for r in drill["Path/edges"]}
    walk: list[str] = []
    node = "origin"
    while node in edges and len(walk) < 64:
        node = edges[node]
        walk.append(node)
    assert walk == path_b
    assert all(r["metric"]["id"] for r in drill["Path/edges"])

    # deleting the probe deletes its groups (operator code): the series vanish
    delete_groups(PushgatewayEndpoint(pushgateway.url), namespace, "web")
    assert not [g for g in pushgateway.groups() if g["labels"].get("namespace") == namespace]
    # (ALERTS/ALERTS_FOR_STATE carry the labels too: Prometheus' own, not pushed)
    pushed = f'{{__name__=~"traceroute_.+|push_time_seconds|push_failure_time_seconds", {sel}}}'
    prometheus.wait_for(f"count({pushed})", lambda r: not r, timeout=30)


def test_ecmp_branches_show_in_the_graph_and_fire_nothing(
    lab_factory: LabFactory,
    pushgateway: Pushgateway,
    prometheus: Prometheus,
    rules_loaded: list[Path],
    probe_workdir: Path,
) -> None:
    """Two equal-cost branches: the Paris flows (UDP, hashed on ports) spread over both.
    The table has one row per branch address naming its flows, the node graph both
    branches, and nothing fires.

    The kernel's multipath hash has a random seed per lab: with 16 flows the chance
    that all land on one branch is 2 in 65536."""
    lab = lab_factory(Topology.ecmp(branches=2))
    branches = lab.truth_paths("probe", "target")
    assert len(branches) == 2
    fork = next(i for i, (a, b) in enumerate(zip(*branches, strict=True)) if a != b)
    probe = monitored_probe(
        lab,
        pushgateway,
        prometheus,
        rules_loaded,
        probe_workdir,
        expected_hops=len(branches[0]),
        protocol="udp",
        flows=16,
    )
    for _ in range(CONFIRM_RUNS + 1):
        (traced,) = probe.run().targets
        assert traced.reached and traced.path is not None
        assert traced.path[fork] == {branches[0][fork], branches[1][fork]}, traced.path
    assert probe.path_changes == 0

    sel = f'namespace="{probe.namespace}", probe="web"'
    prometheus.wait_for(f"traceroute_path_changes_total{{{sel}}} == 0", timeout=30)
    variables = {
        "datasource": "prom",
        "namespace": probe.namespace,
        "probe": "web",
        "target": probe.target,
    }
    drill = check_dashboard_returns_data(
        prometheus, build_dashboards()["traceroute-probe"], variables, path_changed=False
    )
    at_fork = [
        (flow, row["metric"]["ip"])
        for row in drill["Hops (latest run)/C"]
        if row["metric"]["ttl"] == str(fork + 1)
        for flow in row["metric"]["flows"].split(",")
    ]
    assert {ip for _, ip in at_fork} == {branches[0][fork], branches[1][fork]}
    assert len(at_fork) == len({flow for flow, _ in at_fork}), "one address per flow"
    edges = {(r["metric"]["source"], r["metric"]["target"]) for r in drill["Path/edges"]}
    before_fork = branches[0][fork - 1] if fork else "origin"
    assert {(before_fork, branches[0][fork]), (before_fork, branches[1][fork])} <= edges
    # Prometheus evaluated the rules over these runs: nothing fired or is pending
    time.sleep(3)
    for name in ("TraceroutePathChanged", "TracerouteHopCountChanged"):
        assert not alerts_of(prometheus, probe.namespace, name)
    delete_groups(PushgatewayEndpoint(pushgateway.url), probe.namespace, "web")
