"""Result model, termination message, metrics exposition, CLI argument handling."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from traceroute_probe import cli
from traceroute_probe.contract import ExitCode
from traceroute_probe.metrics import METRIC_FAMILIES, build_registry
from traceroute_probe.result import (
    FlowHop,
    Hop,
    RunResult,
    TargetError,
    TargetResult,
    termination_message,
)

from devcluster.bench.synthetic import synthetic_run


def _target(
    name: str, hops: int, flows: int = 3, v6: bool = False, reached: bool = True
) -> TargetResult:
    t = TargetResult(
        target=name,
        address="fd00:ffff::2" if v6 else "10.9.9.2",
        family=6 if v6 else 4,
        protocol="icmp",
    )
    for ttl in range(1, hops + 1):
        fhs = []
        for flow in range(flows):
            addr = f"fd00:{ttl:x}:{flow:x}::1234:5678:9abc" if v6 else f"10.{ttl}.{flow}.1"
            silent = ttl == 3
            fh = FlowHop(
                flow=flow, ttl=ttl, sent=3, rtts_ms=[] if silent else [1.0 * ttl, 1.2 * ttl]
            )
            if not silent:
                fh.responders[addr] = 2
            fhs.append(fh)
        t.hops.append(Hop(ttl=ttl, flows=fhs))
    t.reached, t.hop_count = reached, hops
    t.destination_sent, t.destination_rtts_ms = 6, [10.0, 12.0]
    return t


def test_termination_message_small_run_is_complete() -> None:
    run = RunResult(
        started=1764000000.1, duration_seconds=1.5, targets=[_target("a", 5)], exit_code=0
    )
    doc = json.loads(termination_message(run))
    assert doc["v"] == 1 and doc["code"] == 0 and doc["trunc"] is False
    (t,) = doc["t"]
    assert t["n"] == "a" and t["r"] is True and t["h"] == 5 and t["rtt"] == 11.0
    assert t["p"][2] == [] and t["p"][0] == ["10.1.0.1", "10.1.1.1", "10.1.2.1"]
    assert t["l"] == pytest.approx(1 - 2 / 6, abs=1e-3)


@pytest.mark.parametrize("targets", [1, 8, 64])
def test_termination_message_stays_within_4096_bytes(targets: int) -> None:
    run = RunResult(
        started=1764000000.1,
        duration_seconds=9.9,
        targets=[
            _target(f"very-long-target-name-{i}.example.internal", 30, v6=True)
            for i in range(targets)
        ],
        errors=["push: " + "x" * 1000],
        exit_code=5,
    )
    text = termination_message(run)
    assert len(text.encode()) <= 4096
    doc = json.loads(text)
    assert doc["code"] == 5
    if targets > 1:
        assert doc["trunc"] is True
        # degradation keeps the front targets' paths and nulls the back ones
        ps = [t["p"] for t in doc["t"]]
        assert ps[-1] is None
        assert all(p is None for p in ps[ps.index(None) :])
        assert "rtt" not in doc["t"][0]
        assert all(isinstance(t["r"], bool) and isinstance(t["h"], int) for t in doc["t"])


def test_json_document_has_contract_fields() -> None:
    doc = _target("a", 4).to_json()
    assert {"target", "address", "reached", "hop_count", "duration_seconds", "hops"} <= set(doc)
    assert [h["ttl"] for h in doc["hops"]] == [1, 2, 3, 4]
    assert doc["hops"][2]["addresses"] == [] and doc["hops"][0]["rtt_ms"]["min"] == 1.0


def test_metrics_cover_every_family_and_carry_labels() -> None:
    t = _target("a", 4)
    t.expected_hops = 4
    broken = TargetResult(
        target="nowhere.invalid",
        address=None,
        family=None,
        protocol="icmp",
        error=TargetError("resolve", "no such name"),
    )
    run = RunResult(started=1764000000.0, duration_seconds=1.0, targets=[t, broken])
    text = generate_latest(build_registry(run, {"team": "net"})).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(METRIC_FAMILIES) <= set(families) | {"traceroute_destination_rtt_seconds"}
    for family in families.values():
        for sample in family.samples:
            assert sample.labels["team"] == "net"
    info = {
        (s.labels["flows"], s.labels["ttl"], s.labels["ip"])
        for s in families["traceroute_hop_info"].samples
    }
    assert ("0", "1", "10.1.0.1") in info and not any(ttl == "3" for _, ttl, _ in info)
    assert ("2", "4", "10.4.2.1") in info
    edges = {(s.labels["from"], s.labels["to"]) for s in families["traceroute_edge_info"].samples}
    assert (
        ("origin", "10.1.0.1") in edges
        and ("10.2.0.1", "*3") in edges
        and ("*3", "10.4.0.1") in edges
    )
    errors = [s.labels for s in families["traceroute_target_error"].samples]
    assert errors == [{"target": "nowhere.invalid", "kind": "resolve", "team": "net"}]
    rtt_min = {s.labels["ttl"]: s.value for s in families["traceroute_hop_rtt_min_seconds"].samples}
    assert rtt_min == {"1": 0.001, "2": 0.002, "4": 0.004}  # silent TTL 3 has no RTT series


def _samples(run: RunResult) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(build_registry(run, {})).decode()
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def test_per_hop_statistics_are_pooled_across_flows() -> None:
    t = _target("a", 4)
    lossy = t.hops[1].flows[1]  # TTL 2, flow 1: 1 of 3 answered, 40 ms
    lossy.rtts_ms = [40.0]
    t.hops[1].rate_limited = True
    samples = _samples(RunResult(started=1764000000.0, duration_seconds=1.0, targets=[t]))
    loss = {labels["ttl"]: value for labels, value in samples["traceroute_hop_loss_ratio"]}
    # TTL 2: 9 sent over the flows, 2 + 1 + 2 answered; TTL 3 silent
    assert loss == {
        "1": pytest.approx(1 - 6 / 9),
        "2": pytest.approx(1 - 5 / 9),
        "3": 1.0,
        "4": pytest.approx(1 - 6 / 9),
    }
    avg = {labels["ttl"]: value for labels, value in samples["traceroute_hop_rtt_avg_seconds"]}
    assert avg["2"] == pytest.approx((2.0 + 2.4) * 2 / 1000 / 5 + 0.040 / 5)
    assert all("flow" not in labels for labels, _ in samples["traceroute_hop_loss_ratio"])
    # rate limiting is reported where it happened, nowhere else
    assert [labels["ttl"] for labels, _ in samples["traceroute_hop_rate_limited"]] == ["2"]


def test_hop_info_keeps_which_flow_met_which_address() -> None:
    run = synthetic_run()
    (target,) = run.targets
    samples = _samples(run)
    seen = {
        (labels["ttl"], flow, labels["ip"])
        for labels, _ in samples["traceroute_hop_info"]
        for flow in labels["flows"].split(",")
    }
    assert seen == {
        (str(hop.ttl), str(fh.flow), ip)
        for hop in target.hops
        for fh in hop.flows
        for ip in fh.responders
    }
    fork = {
        labels["ip"]: labels["flows"]
        for labels, _ in samples["traceroute_hop_info"]
        if labels["ttl"] == "6"
    }
    assert fork == {"10.99.6.1": "0", "10.99.6.2": "1", "10.99.6.3": "2"}


def test_series_per_probe_stay_within_100_for_15_hops_and_3_flows() -> None:
    """The budget of issue 13 (docs: README "Metrics"): 15 hops, 3 flows, 3 probes per
    hop, ECMP on three TTLs. Was 407 series before the per-hop statistics were pooled."""
    run = synthetic_run()
    (target,) = run.targets
    assert (len(target.hops), len(target.hops[0].flows), target.hops[0].flows[0].sent) == (15, 3, 3)
    series = sum(len(samples) for samples in _samples(run).values())
    assert series <= 100
    assert series == 100  # the count README and docs state


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "traceroute_probe.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--max-hops", "0", "10.0.0.1"],
        ["--protocol", "sctp", "10.0.0.1"],
        ["--label", "target=x", "10.0.0.1"],
        ["--label", "no-equals", "10.0.0.1"],
        ["--expected-hops", "other=3", "10.0.0.1"],
        ["--pushgateway", "http://127.0.0.1:9", "10.0.0.1"],
        ["--port", "80", "10.0.0.1"],
        ["--start-delay-seconds", "51", "10.0.0.1"],
        [],
        [f"10.0.0.{i}" for i in range(1, 66)],
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    proc = _run_cli(*args)
    assert proc.returncode == ExitCode.USAGE
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("traceroute-probe: error: ")
    assert "Traceback" not in proc.stderr


def test_wrong_family_literal_is_a_resolve_error_exit_3(tmp_path) -> None:
    log = tmp_path / "termination-log"
    proc = _run_cli("--ip-family", "6", "--termination-log", str(log), "10.0.0.1")
    assert proc.returncode == ExitCode.RESOLVE
    assert "not an IPv6 address" in proc.stderr and "Traceback" not in proc.stderr
    doc = json.loads(log.read_text())
    assert doc["code"] == 3 and doc["t"][0]["a"] is None and doc["t"][0]["e"].startswith("resolve")


def test_expected_hops_forms() -> None:
    assert cli._parse_expected(["5", "b=7"], ["a", "b"]) == {"a": 5, "b": 7}
    assert cli._parse_expected([], ["a"]) == {}
