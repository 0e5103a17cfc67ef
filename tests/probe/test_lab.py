"""The probe against real Linux routers in the network lab (network namespaces).

Every trace runs the real CLI as a process inside the lab's "probe" namespace, as root
(raw sockets) or as uid 65534 without capabilities (ping/datagram sockets), and is
compared with the lab's ground truth. TCP as uid 65534 uses connect() probes (no raw
sockets); nothing listens on the lab's hosts, so the destination answers with a RST unless
a test starts a listener.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.lab import CLUSTER_GATEWAY, Lab, Topology
from devcluster.runtime import free_port
from tests.fixtures.lab import require_root

pytestmark = pytest.mark.slow

NOBODY = 65534
PYTHON = sys.executable  # the project venv: readable by uid 65534


def trace(
    lab: Lab, *args: str, user: int | None = None, timeout: float = 60.0
) -> tuple[subprocess.CompletedProcess[str], Any]:
    proc = lab.run(
        "probe",
        # A host may have a /dev/termination-log of its own: never touch it from tests.
        [
            PYTHON,
            "-m",
            "traceroute_probe.cli",
            "--format",
            "json",
            "--termination-log",
            "/dev/null",
            *args,
        ],
        user=user,
        timeout=timeout,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc, doc


def path_of(doc: dict[str, Any]) -> list[list[str]]:
    return [hop["addresses"] for hop in doc["hops"]]


def flow_path(doc: dict[str, Any], flow: int) -> tuple[str, ...]:
    return tuple(",".join(hop["flows"][flow]["addresses"]) or "*" for hop in doc["hops"])


@pytest.fixture(scope="module")
def chain() -> Iterator[Lab]:
    require_root()
    with Lab(Topology.chain(routers=4)) as lab:
        # Lifted on purpose: these tests check hop accounting against ground truth and
        # assert no loss at all ("replies == sent"), many runs within seconds. With the
        # default limits the probe still shows every hop (tests/probe/test_lab_pacing.py),
        # but a bucket the previous run spent drops first attempts, and those drops are
        # real losses it reports (rate_limited), which would break "replies == sent".
        lab.lift_icmp_ratelimits(burst=10000)
        yield lab


CASES = [
    ("icmp", 4, None),
    ("icmp", 6, None),
    ("icmp", 4, NOBODY),
    ("icmp", 6, NOBODY),
    ("udp", 4, NOBODY),
    ("udp", 6, NOBODY),
    ("tcp", 4, None),
    ("tcp", 6, None),
    ("tcp", 4, NOBODY),
    ("tcp", 6, NOBODY),
]


@pytest.mark.parametrize(("protocol", "family", "user"), CASES)
def test_hops_match_ground_truth(chain: Lab, protocol: str, family: int, user: int | None) -> None:
    truth = chain.truth("probe", "target", family=family)  # type: ignore[arg-type]
    proc, doc = trace(chain, "--protocol", protocol, chain.addr("target", family), user=user)  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stderr
    assert doc["reached"] is True and doc["hop_count"] == len(truth)
    assert path_of(doc) == [[hop] for hop in truth]
    for hop in doc["hops"]:
        assert hop["replies"] == hop["sent"] > 0, hop  # no loss on a quiet lab
        assert hop["rtt_ms"] is not None
    assert doc["destination_loss_ratio"] == 0.0


def test_tcp_raw_forced_without_capability_says_so(chain: Lab) -> None:
    proc, doc = trace(
        chain, "--protocol", "tcp", "--socket", "raw", chain.addr("target"), user=NOBODY
    )
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs raw sockets (CAP_NET_RAW)" in lines[0]
    assert doc["reached"] is False and doc["error"]["kind"] == "permission"


LISTENER = """
import socket, sys, time
family = socket.AF_INET if sys.argv[1] == "4" else socket.AF_INET6
with socket.socket(family, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0" if sys.argv[1] == "4" else "::", int(sys.argv[2])))
    s.listen(64)
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_connect_probes_to_an_open_port(chain: Lab, family: int) -> None:
    """An open port answers SYN-ACK: reached, and no TIME_WAIT is left behind (SO_LINGER 0).
    As root with --socket dgram: connect probes are forced even though raw is possible."""
    port = "8443"
    listener = chain.popen(
        "target",
        [PYTHON, "-c", LISTENER, str(family), port],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        truth = chain.truth("probe", "target", family=family)  # type: ignore[arg-type]
        proc, doc = trace(
            chain,
            "--protocol",
            "tcp",
            "--socket",
            "dgram",
            "--port",
            port,
            chain.addr("target", family),  # type: ignore[arg-type]
        )
        left = chain.run("probe", ["ss", "-Htan", "state", "time-wait"], check=True).stdout
    finally:
        listener.kill()
        listener.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert doc["reached"] is True and path_of(doc) == [[hop] for hop in truth]
    assert doc["destination_loss_ratio"] == 0.0
    assert {f["dst_port"] for f in doc["flows"]} == {int(port)}
    assert left.strip() == "", left


def test_unprivileged_tcp_silent_router_is_a_hole(chain: Lab) -> None:
    truth = chain.truth("probe", "target")
    chain.silence("r2")
    try:
        proc, doc = trace(chain, "--protocol", "tcp", chain.addr("target"), user=NOBODY)
    finally:
        chain.unsilence("r2")
    assert proc.returncode == 0, proc.stderr
    assert doc["reached"] is True and doc["hop_count"] == len(truth)
    expected = [[hop] for hop in truth]
    expected[1] = []
    assert path_of(doc) == expected
    assert doc["hops"][1]["replies"] == 0 and doc["hops"][1]["sent"] > 0
    assert doc["duration_seconds"] < 10.0  # the silence was settled, not cut by the deadline


def test_silent_routers_are_holes_not_the_end(chain: Lab) -> None:
    truth = chain.truth("probe", "target")
    chain.silence("r2")
    chain.silence("r3")
    try:
        proc, doc = trace(chain, chain.addr("target"), user=NOBODY)
    finally:
        chain.unsilence("r2")
        chain.unsilence("r3")
    assert proc.returncode == 0
    assert doc["reached"] is True and doc["hop_count"] == len(truth)
    expected = [[hop] for hop in truth]
    expected[1] = expected[2] = []
    assert path_of(doc) == expected
    assert doc["duration_seconds"] < 3.0  # settled by later hops' RTT, not a fixed timeout


@pytest.mark.parametrize(("protocol", "user"), [("icmp", None), ("udp", None), ("tcp", NOBODY)])
def test_silent_destination_ends_at_the_gap_limit(
    chain: Lab, protocol: str, user: int | None
) -> None:
    truth = chain.truth("probe", "target")
    chain.silence("target")
    try:
        proc, doc = trace(
            chain, "--protocol", protocol, "--timeout", "10", chain.addr("target"), user=user
        )
    finally:
        chain.unsilence("target")
    assert proc.returncode == 0, proc.stderr  # an outage measured is a successful run
    assert doc["reached"] is False and doc["hop_count"] == len(truth) - 1
    assert path_of(doc) == [[hop] for hop in truth[:-1]]
    assert doc["destination_loss_ratio"] == 1.0
    assert doc["duration_seconds"] < 10.0  # the gap limit ended it, not the deadline


def test_termination_message_for_many_targets(chain: Lab, tmp_path: Path) -> None:
    targets = [a for node in chain.topology.nodes if node != "probe" for a in chain.addrs(node)]
    targets += [a for node in chain.topology.nodes if node != "probe" for a in chain.addrs(node, 6)]
    log = tmp_path / "termination-log"
    proc, docs = trace(chain, "--termination-log", str(log), *targets)
    assert proc.returncode == 0, proc.stderr
    assert len(docs) == len(targets) and all(d["reached"] for d in docs)
    text = log.read_text()
    assert len(text.encode()) <= 4096
    message = json.loads(text)
    assert message["code"] == 0 and [t["n"] for t in message["t"]] == targets
    truth = chain.truth("probe", "target")
    by_name = {t["n"]: t for t in message["t"]}
    entry = by_name[chain.addr("target")]
    assert entry["r"] is True and entry["h"] == len(truth)
    assert entry["p"] is None or entry["p"] == [[hop] for hop in truth]


def test_strict_router_rate_limits_cause_no_false_loss() -> None:
    require_root()
    with Lab(Topology.chain(routers=4)) as lab:
        # Per-source bucket as Linux ships it: 6 Time Exceeded, then one per second.
        # The namespace-wide bucket stays at its default: since Linux 6.11 it charges a
        # random 0-2 credits per message, so a tiny global burst drops at random.
        for node in ("r1", "r2", "r3", "r4"):
            lab.set_icmp_ratelimit(node, ms=1000, burst=50)
        truth = lab.truth("probe", "target")
        # The limit is real: 9 simultaneous probes per hop (traceroute -q 9) lose some.
        naive = lab.run("probe", ["traceroute", "-n", "-q", "9", "-N", "64", lab.addr("target")])
        router_lines = naive.stdout.splitlines()[1 : len(truth)]
        assert any("*" in line for line in router_lines), naive.stdout
        time.sleep(6.5)  # buckets full again
        proc, doc = trace(lab, lab.addr("target"), user=NOBODY)
        assert proc.returncode == 0
        assert path_of(doc) == [[hop] for hop in truth]
        for hop in doc["hops"]:
            assert hop["replies"] == hop["sent"], hop
            assert hop["rate_limited"] is False


def test_route_flip_between_runs() -> None:
    require_root()
    with Lab(Topology.diamond(a_routers=2, b_routers=3)) as lab:
        # The kernel's default ICMP rate limits: the probe paces itself (back to back).
        before_truth = lab.truth("probe", "target")
        _, before = trace(lab, lab.addr("target"), user=NOBODY)
        lab.use_path("b")
        after_truth = lab.truth("probe", "target")
        _, after = trace(lab, lab.addr("target"), user=NOBODY)
    assert before_truth != after_truth
    assert path_of(before) == [[hop] for hop in before_truth]
    assert path_of(after) == [[hop] for hop in after_truth]
    assert before["path_fingerprint"] != after["path_fingerprint"]
    assert before["hop_count"] + 1 == after["hop_count"]


def test_ecmp_fixed_flows_are_stable_varying_flows_are_not() -> None:
    require_root()
    runs = 20
    with Lab(Topology.ecmp(branches=2)) as lab:
        # The kernel's default ICMP rate limits: the probe paces itself (back to back).
        target = lab.addr("target")
        valid = {tuple(p) for p in lab.truth_paths("probe", "target")}
        assert len(valid) == 2
        fixed: list[list[tuple[str, ...]]] = []
        for _ in range(runs):
            _, doc = trace(lab, "--protocol", "udp", "--flow-seed", "stable", target)
            assert doc["reached"] is True
            fixed.append([flow_path(doc, f) for f in range(3)])
        varying: set[tuple[str, ...]] = set()
        for i in range(runs):
            _, doc = trace(lab, "--protocol", "udp", "--flow-seed", f"baseline-{i}", target)
            varying.add(flow_path(doc, 0))
    assert all(run == fixed[0] for run in fixed), fixed
    assert all(p in valid for p in fixed[0])
    assert len(varying) == 2 and varying <= valid


def _series(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_pushgateway_receives_series_and_put_drops_vanished_hops(pushgateway: Any) -> None:
    require_root()
    with Lab(Topology.diamond(a_routers=2, b_routers=3)) as lab:
        # The kernel's default ICMP rate limits: the probe paces itself (back to back).
        lab.attach_cluster_network("probe")
        url = f"http://{CLUSTER_GATEWAY}:{pushgateway.port}"
        args = (
            "--pushgateway",
            url,
            "--namespace",
            "lab-ns",
            "--probe",
            "flip",
            "--label",
            "team=net",
        )
        target = lab.addr("target")
        path_a = lab.truth("probe", "target")
        proc, _ = trace(lab, *args, target, user=NOBODY)
        assert proc.returncode == 0, proc.stderr
        first = pushgateway.metrics_text()
        lab.use_path("b")
        path_b = lab.truth("probe", "target")
        proc, _ = trace(lab, *args, target, user=NOBODY)
        assert proc.returncode == 0, proc.stderr
        second = pushgateway.metrics_text()
    ours = 'namespace="lab-ns",probe="flip"'
    info_first = [s for s in _series(first, "traceroute_hop_info") if ours in s]
    info_second = [s for s in _series(second, "traceroute_hop_info") if ours in s]
    assert {hop for hop in path_a if any(f'ip="{hop}"' in s for s in info_first)} == set(path_a)
    gone = set(path_a) - set(path_b)
    assert gone
    assert not [s for s in info_second for hop in gone if f'ip="{hop}"' in s]
    assert {hop for hop in path_b if any(f'ip="{hop}"' in s for s in info_second)} == set(path_b)
    hops = [s for s in _series(second, "traceroute_hops") if ours in s]
    assert len(hops) == 1 and 'team="net"' in hops[0] and hops[0].endswith(f" {len(path_b)}")
    assert next(s for s in _series(second, "traceroute_reached") if ours in s).endswith(" 1")


def test_pushgateway_down_exit_5_result_and_message_still_written(tmp_path: Path) -> None:
    require_root()
    with Lab(Topology.chain(routers=2)) as lab:
        # The kernel's default ICMP rate limits: the probe paces itself (back to back).
        lab.attach_cluster_network("probe")
        dead = f"http://{CLUSTER_GATEWAY}:{free_port(CLUSTER_GATEWAY)}"
        log = tmp_path / "termination-log"
        started = time.monotonic()
        proc, doc = trace(
            lab,
            "--pushgateway",
            dead,
            "--probe",
            "p",
            "--termination-log",
            str(log),
            lab.addr("target"),
        )
        elapsed = time.monotonic() - started
    assert proc.returncode == 5, proc.stderr
    assert doc["reached"] is True  # the trace itself is complete and printed
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "push" in lines[0] and "refused" in lines[0].lower(), lines
    message = json.loads(log.read_text())
    assert message["code"] == 5 and message["t"][0]["r"] is True
    assert any(e.startswith("push:") for e in message["err"])
    assert elapsed < 30  # retries are bounded


def test_many_targets_share_rate_limited_first_hops_without_false_stars() -> None:
    """Every target's first hops are the same Linux routers (burst 6, then 1/s): the
    per-responder budget and flow-major pacing must still show every hop."""
    require_root()
    with Lab(Topology.chain(routers=4)) as lab:
        nodes = [n for n in lab.topology.nodes if n != "probe"]
        for node in nodes:
            lab.set_icmp_ratelimit(node, ms=1000, burst=50)
        targets = [lab.addr(n) for n in nodes] + [lab.addr(n, 6) for n in nodes]
        proc, docs = trace(lab, *targets, user=NOBODY)
        truths = [lab.truth("probe", n) for n in nodes] + [lab.truth("probe", n, 6) for n in nodes]
    assert proc.returncode == 0, proc.stderr
    for doc, truth in zip(docs, truths, strict=True):
        assert path_of(doc) == [[hop] for hop in truth], doc["target"]
    assert max(d["duration_seconds"] for d in docs) < 10.0
