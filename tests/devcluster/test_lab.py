"""Smoke tests of the network lab: real namespaces, real routers, Debian traceroute."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time

import pytest

from devcluster.lab import (
    CLUSTER_BRIDGE,
    CLUSTER_GATEWAY,
    CLUSTER_SUBNET,
    Family,
    Lab,
    Topology,
    cleanup_all,
)
from tests.fixtures.lab import LabFactory

pytestmark = pytest.mark.slow


def parse_traceroute(stdout: str) -> list[list[str | None]]:
    """Per TTL, the responder of each probe (None for ``*``) from ``traceroute -n``."""
    hops: list[list[str | None]] = []
    for line in stdout.splitlines()[1:]:
        tokens = line.split()
        if not tokens or not tokens[0].isdigit():
            continue
        probes: list[str | None] = []
        current: str | None = None
        for token in tokens[1:]:
            if token == "*":
                probes.append(None)
                continue
            try:
                current = str(ipaddress.ip_address(token))
            except ValueError:
                if token == "ms":
                    probes.append(current)
        hops.append(probes)
    return hops


def traceroute(
    lab: Lab, src: str, dst: str, *args: str, family: Family = 4
) -> list[list[str | None]]:
    argv = ["traceroute", "-n", f"-{family}", "-w", "1", *args, lab.addr(dst, family)]
    proc = lab.run(src, argv, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return parse_traceroute(proc.stdout)


def first_responders(hops: list[list[str | None]]) -> list[str | None]:
    return [next((p for p in probes if p is not None), None) for probes in hops]


def ping_rtts_ms(lab: Lab, src: str, dst: str, family: Family, count: int = 5) -> list[float]:
    """RTTs of ICMP echo from ``src`` to node or address ``dst`` (icmplib in the namespace)."""
    code = textwrap.dedent(
        """
        import json, sys
        import icmplib
        host = icmplib.ping(sys.argv[1], count=int(sys.argv[2]), interval=0.05,
                            timeout=2, privileged=False)
        print(json.dumps(host.rtts))
        """
    )
    address = dst if ":" in dst or "." in dst else lab.addr(dst, family)
    proc = lab.run(src, [sys.executable, "-c", code, address, str(count)])
    assert proc.returncode == 0, proc.stderr
    rtts: list[float] = json.loads(proc.stdout)
    return rtts


def loosen_rate_limits(lab: Lab) -> None:
    """Many traceroutes in a row would otherwise hit the kernel's ICMP limits."""
    lab.lift_icmp_ratelimits(burst=1000)


@pytest.mark.parametrize("family", [4, 6])
def test_chain_trace_shows_routers_in_order(lab_factory: LabFactory, family: Family) -> None:
    lab = lab_factory(Topology.chain(routers=4))
    truth = lab.truth("probe", "target", family)
    assert [lab.node_of(a) for a in truth] == ["r1", "r2", "r3", "r4", "target"]

    hops = traceroute(lab, "probe", "target", "-q", "1", family=family)

    assert first_responders(hops) == truth


def test_silent_router_shows_star_at_its_ttl(lab_factory: LabFactory) -> None:
    lab = lab_factory(Topology.chain(routers=4))
    loosen_rate_limits(lab)
    truth = lab.truth("probe", "target")
    lab.silence("r2")

    hops = traceroute(lab, "probe", "target", "-q", "2")

    assert hops[1] == [None, None]
    assert first_responders(hops) == [truth[0], None, *truth[2:]]

    lab.unsilence("r2")
    assert first_responders(traceroute(lab, "probe", "target", "-q", "1")) == truth


@pytest.mark.parametrize("method", ["-U", "-I", "-T"])
def test_silent_destination_answers_nothing(lab_factory: LabFactory, method: str) -> None:
    lab = lab_factory(Topology.chain(routers=2))
    loosen_rate_limits(lab)
    lab.silence("target")

    hops = first_responders(traceroute(lab, "probe", "target", method, "-q", "1", "-m", "4"))

    assert hops == [lab.link_addr("r1", "probe"), lab.link_addr("r2", "r1"), None, None]

    lab.unsilence("target")
    reached = first_responders(traceroute(lab, "probe", "target", method, "-q", "1", "-m", "4"))
    assert reached == lab.truth("probe", "target")


@pytest.mark.parametrize("family", [4, 6])
def test_route_flip_changes_the_path(lab_factory: LabFactory, family: Family) -> None:
    lab = lab_factory(Topology.diamond(a_routers=2, b_routers=3))
    loosen_rate_limits(lab)
    path_a = lab.truth("probe", "target", family)
    assert first_responders(traceroute(lab, "probe", "target", "-q", "1", family=family)) == path_a

    lab.use_path("b")

    path_b = lab.truth("probe", "target", family)
    assert [lab.node_of(a) for a in path_b] == ["r1", "b1", "b2", "b3", "r2", "target"]
    assert [lab.node_of(a) for a in path_a] == ["r1", "a1", "a2", "r2", "target"]
    assert first_responders(traceroute(lab, "probe", "target", "-q", "1", family=family)) == path_b
    assert lab.flip() == "a"
    assert first_responders(traceroute(lab, "probe", "target", "-q", "1", family=family)) == path_a


@pytest.mark.parametrize("family", [4, 6])
def test_ecmp_source_ports_take_both_branches(lab_factory: LabFactory, family: Family) -> None:
    lab = lab_factory(Topology.ecmp(branches=2))
    loosen_rate_limits(lab)
    expected = lab.truth_paths("probe", "target", family)
    assert len(expected) == 2

    seen = []
    for sport in range(40000, 40016):
        # -U: fixed destination port, --sport: fixed source port -> one flow per run.
        hops = traceroute(
            lab, "probe", "target", "-U", f"--sport={sport}", "-q", "1", "-m", "4", family=family
        )
        seen.append(first_responders(hops))

    assert all(path in expected for path in seen), seen
    branches = {lab.node_of(path[1]) for path in seen if path[1] is not None}
    assert branches == {"b1", "b2"}


@pytest.mark.parametrize("family", [4, 6])
def test_delay_links_add_the_configured_rtt(lab_factory: LabFactory, family: Family) -> None:
    one_way_ms = 10.0
    lab = lab_factory(Topology.chain(routers=3, link_delay_ms=one_way_ms))  # 4 links
    expected_rtt = 2 * 4 * one_way_ms

    rtts = ping_rtts_ms(lab, "probe", "target", family, count=6)

    assert len(rtts) == 6, "echo replies lost on an idle delay path"
    assert min(rtts) >= expected_rtt
    # The relay wakes within a fraction of a millisecond; the bound leaves room
    # for a loaded machine but catches a missing or doubled delay.
    assert statistics.median(rtts) < expected_rtt + 15

    # Each router is one more delayed link away: hop k answers after 2*k*delay.
    hops = traceroute(lab, "probe", "target", "-q", "1", family=family)
    assert first_responders(hops) == lab.truth("probe", "target", family)


def test_delay_per_link_shows_in_hop_rtts(lab_factory: LabFactory) -> None:
    lab = lab_factory(Topology.chain(routers=2, link_delay_ms=[5.0, 0.0, 15.0]))
    # (node, its address facing the probe, expected RTT = 2 x one-way delays on the way)
    expected = [
        ("r1", lab.link_addr("r1", "probe"), 10.0),
        ("r2", lab.link_addr("r2", "r1"), 10.0),
        ("target", lab.addr("target"), 40.0),
    ]
    for node, address, rtt in expected:
        rtts = ping_rtts_ms(lab, "probe", address, 4, count=3)
        assert len(rtts) == 3
        assert rtt <= min(rtts) < rtt + 10, (node, rtts)


@pytest.mark.parametrize("family", [4, 6])
def test_icmp_ratelimit_knob_is_in_effect(lab_factory: LabFactory, family: Family) -> None:
    lab = lab_factory(Topology.chain(routers=2))
    burst_at_ttl_2 = ["-f", "2", "-m", "2", "-q", "10", "-N", "10"]

    lab.set_icmp_ratelimit("r2", ms=2000, burst=50)
    strict = traceroute(lab, "probe", "target", *burst_at_ttl_2, family=family)[0]
    lab.set_icmp_ratelimit("r2", ms=0, burst=1000)
    loose = traceroute(lab, "probe", "target", *burst_at_ttl_2, family=family)[0]

    # The per-destination bucket of a fresh router holds 6 tokens.
    assert 1 <= strict.count(None) <= 10 - 5, strict
    assert loose.count(None) == 0, loose
    assert set(loose) == {lab.link_addr("r2", "r1", family)}


def test_unprivileged_process_has_no_capabilities_but_can_ping(lab_factory: LabFactory) -> None:
    lab = lab_factory(Topology.chain(routers=1))
    status = lab.run(
        "probe", ["grep", "-E", "^(Uid|CapEff|CapPrm|CapBnd):", "/proc/self/status"], user=65534
    )
    fields = dict(line.split(":", 1) for line in status.stdout.splitlines())
    assert fields["Uid"].split()[0] == "65534"
    assert {int(fields[k], 16) for k in ("CapEff", "CapPrm", "CapBnd")} == {0}

    for family in (4, 6):
        code = (
            "import icmplib,sys;"
            "h=icmplib.ping(sys.argv[1],count=2,interval=0.05,timeout=2,privileged=False);"
            "sys.exit(0 if h.packets_received==2 else 1)"
        )
        proc = lab.run(
            "probe", [sys.executable, "-c", code, lab.addr("target", family)], user=65534
        )
        assert proc.returncode == 0, proc.stderr


def test_teardown_leaves_no_namespace_or_relay(lab_factory: LabFactory) -> None:
    lab = Lab(Topology.chain(routers=2, link_delay_ms=1.0))
    with lab:
        names = {lab.netns(n) for n in lab.topology.nodes}
        assert names <= set(netns_list())
        relay = lab._relay
        assert relay is not None and relay.pid is not None
        relay_pid = relay.pid
        sleeper = lab.popen("target", ["sleep", "300"])
    assert not names & set(netns_list())
    assert not os.path.exists(f"/proc/{relay_pid}")
    assert sleeper.poll() is not None


def test_cleanup_all_removes_leftovers_of_a_killed_process(lab_factory: LabFactory) -> None:
    script = textwrap.dedent(
        """
        import json, sys, time
        from devcluster.lab import Lab, Topology
        lab = Lab(Topology.chain(routers=1, link_delay_ms=1.0)).start()
        lab.popen("target", ["sleep", "300"])
        print(json.dumps([lab.netns(n) for n in lab.topology.nodes]), flush=True)
        print(lab._relay.pid, flush=True)
        time.sleep(300)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    try:
        assert owner.stdout is not None
        names = set(json.loads(owner.stdout.readline()))
        relay_pid = int(owner.stdout.readline())
        assert names <= set(netns_list())
    finally:
        owner.send_signal(signal.SIGKILL)  # no teardown can run
        owner.wait(timeout=10)
    assert names <= set(netns_list()), "SIGKILL should leave the namespaces behind"
    # The delay relay notices its parent is gone (stdin EOF) and exits by itself.
    for _ in range(50):
        if not os.path.exists(f"/proc/{relay_pid}"):
            break
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{relay_pid}")

    removed = cleanup_all()

    assert not names & set(netns_list())
    assert any(item.startswith("netns ") for item in removed)
    assert any(item.startswith("process ") for item in removed)  # the sleep in target


def test_cluster_network_reaches_gateway_and_nothing_else(lab_factory: LabFactory) -> None:
    lab = lab_factory(Topology.chain(routers=1))
    address = lab.attach_cluster_network("probe")
    assert ipaddress.ip_address(address) in ipaddress.ip_network(CLUSTER_SUBNET)
    assert os.path.exists(f"/sys/class/net/{CLUSTER_BRIDGE}")

    with socket.create_server((CLUSTER_GATEWAY, 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(10)
        code = (
            "import socket,sys;"
            "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5);"
            "s.sendall(b'hello');s.close()"
        )
        client = lab.popen(
            "probe", [sys.executable, "-c", code, CLUSTER_GATEWAY, str(port)], user=65534
        )
        conn, peer = server.accept()
        with conn:
            assert conn.recv(16) == b"hello"
        assert peer[0] == address
        assert client.wait(timeout=10) == 0

    # Only the cluster subnet and the lab subnets are routed: the outside is unreachable.
    outside = lab.run("probe", ["ip", "route", "get", "192.0.2.1"])
    assert outside.returncode != 0
    assert "unreachable" in outside.stderr
    routed = lab.run("probe", ["ip", "-4", "route", "show"]).stdout
    assert "default" not in routed
    # The other hosts of the lab are not on the cluster network.
    assert lab.run("target", ["ip", "route", "get", CLUSTER_GATEWAY]).returncode != 0


def netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_concurrent_labs_do_not_collide(lab_factory: LabFactory) -> None:
    first = lab_factory(Topology.chain(routers=1))
    second = lab_factory(Topology.chain(routers=1))
    assert first.netns("probe") != second.netns("probe")
    for lab in (first, second):
        assert first_responders(traceroute(lab, "probe", "target", "-q", "1")) == lab.truth(
            "probe", "target"
        )
