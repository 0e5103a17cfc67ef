"""The README's demo (`make demo-once` = `python -m devcluster demo --once`) runs end to end.

Everything real: control plane, kube-scheduler, two nodes (kubelet + containerd), the images
pulled from the private TLS registry with a pull Secret, `helm install` of the chart, the
operator as its Deployment's pod, probe pods on a node, `kubectl logs`, a route flip, the
PathChanged Event, Prometheus firing TraceroutePathChanged from the generated
PrometheusRule; then nothing is left: no kubelet or containerd, no mount, no cgroup, no CNI
entry, no lab namespace (with the nodes' bridges), no runtime directory of the demo's.
"""

from __future__ import annotations

import ipaddress
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devcluster.lab import CLUSTER_SUBNET, CLUSTER_VETH_PREFIX, cleanup_all
from devcluster.runtime import cgroup_dirs, mounts_under, runtime_dirs
from tests.devcluster.test_teardown import shared_entries
from tests.fixtures.lab import require_root

pytestmark = pytest.mark.slow

TIMEOUT_S = 480
NODE_LINE = re.compile(r"^node (node\d)\s+first hop (r\d), InternalIP ([\d.]+), root (\S+)$", re.M)


def _lab_namespaces(pid: int) -> list[str]:
    names = subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True
    ).stdout
    return [line.split()[0] for line in names.splitlines() if line.startswith(f"trop-{pid}-")]


def _processes_mentioning(path: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def leftovers(output: str, pid: int, shared_before: set[Path]) -> list[str]:
    """What the demo's nodes (named in its output) and the rest of it left behind."""
    found = []
    nodes = NODE_LINE.findall(output)
    assert len(nodes) == 2, output[:4000]
    links = _root_links()
    subnet = ipaddress.ip_network(CLUSTER_SUBNET)
    for _name, _router, node_ip, root in nodes:
        if Path(root).exists():
            found.append(f"node directory {root}")
        found += [f"mount {m}" for m in mounts_under(Path(root))]
        found += [f"cgroup {d}" for d in cgroup_dirs(f"trop-{Path(root).name}")]
        found += [f"process {p}" for p in _processes_mentioning(root)]
        cni = Path("/var/lib/cni/results")
        if cni.is_dir():
            found += [f"CNI entry {p}" for p in cni.glob(f"trop-{Path(root).name}-*")]
        veth = f"{CLUSTER_VETH_PREFIX}{int(ipaddress.ip_address(node_ip)) - int(subnet[0])}"
        if veth in links:
            found.append(f"cluster veth {veth}")
    found += [f"shared {p}" for p in sorted(shared_entries() - shared_before)]
    found += [f"lab netns {n}" for n in _lab_namespaces(pid)]
    for directory in runtime_dirs():
        owner = directory / "owner.json"
        if owner.is_file() and f'"owner_pid": {pid}' in owner.read_text():
            found.append(f"runtime directory {directory}")
    return found


def test_demo_runs_end_to_end_and_leaves_nothing_behind() -> None:
    require_root()
    shared_before = shared_entries()
    demo = subprocess.Popen(
        [sys.executable, "-m", "devcluster", "demo", "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = demo.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        demo.send_signal(signal.SIGTERM)  # the demo tears down on SIGTERM too
        output, _ = demo.communicate(timeout=90)
        pytest.fail(f"demo took longer than {TIMEOUT_S} s:\n{output[-4000:]}")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    try:
        assert demo.returncode == 0, output[-4000:]
        for step in range(1, 6):
            assert f"==> {step}/6 " in output
        assert "torn down" in output
        assert leftovers(output, demo.pid, shared_before) == []
    finally:
        cleanup_all()  # only labs of dead owners: a crashed demo's, never another test's
    # two Ready nodes on containerd
    nodes = re.findall(r"^(node\d)\s+Ready\s+.*\scontainerd://[\d.]+", output, re.M)
    assert nodes == ["node1", "node2"], output[:6000]
    # the operator and probe pods ran images from the private registry (by digest)
    registry = re.search(r"^registry\s+([\d.]+:\d+)\s", output, re.M)
    assert registry, output[:4000]
    operator_pod = r"^pod/\S*traceroute-operator-\S+\s+1/1\s+Running\s.*\s(node\d)\s"
    assert re.search(operator_pod, output, re.M), output
    probe_pod = re.search(
        rf"^lab-target-demo-1-\S+\s+node1\s+{re.escape(registry.group(1))}/"
        r"traceroute-operator/traceroute-probe:\S+\s+\S+@sha256:[0-9a-f]{64}$",
        output,
        re.M,
    )
    assert probe_pod, output
    # kubectl logs: the probe's table from inside the pod, path a then path b
    path_a = re.search(r"^path a: (.*)$", output, re.M)
    path_b = re.search(r"^path b: (.*)$", output, re.M)
    assert path_a and path_b, output
    hops_a, hops_b = path_a.group(1).split(), path_b.group(1).split()
    assert (len(hops_a), len(hops_b)) == (6, 7)
    assert re.search(r"via icmp: reached in 6 hops", output), output
    assert re.search(r"via icmp: reached in 7 hops", output), output
    # the operator read both runs: first path a (6 hops), then path b (7 hops)
    assert re.search(r"lab-target\s+\[\"[\d.]+\"\]\s+\* \* \* \* \*\s+7\s+1/1\s+1\s", output), (
        output
    )
    # the Event names the hops that changed, TTL by TTL: the first branch router is TTL 3
    event = re.search(r"Warning\s+PathChanged\s+tracerouteprobe/lab-target\s+(.*)", output)
    assert event, output[-4000:]
    assert "hops: 6 -> 7" in event.group(1)
    assert f"ttl 3: {hops_a[2]} -> {hops_b[2]}" in event.group(1), event.group(1)
    assert re.search(r"ALERT TraceroutePathChanged \[firing\] target=10\.", output), output


def _read_until(demo: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The demo's output up to `marker` (or its end, or the timeout). Raw reads of the pipe:
    nothing stays in a buffer `communicate()` would not see."""
    assert demo.stdout is not None
    fd = demo.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and selector.select(left):
            chunk = os.read(fd, 65536)
            data += chunk
            if not chunk or marker.encode() in data:
                break
    return data.decode(errors="replace")


def test_sigterm_while_a_probe_runs_on_a_node_leaves_nothing_behind() -> None:
    """`make demo` stopped in the middle (SIGTERM, what Ctrl-C does too): the operator pod
    runs on a node and the probe's first run is under way when the signal comes."""
    require_root()
    shared_before = shared_entries()
    demo = subprocess.Popen(
        [sys.executable, "-m", "devcluster", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = _read_until(demo, "create job lab-target-demo-1", TIMEOUT_S)
        assert "create job lab-target-demo-1" in output, output[-4000:]
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=120)
        output += rest
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    try:
        assert demo.returncode == 0, output[-4000:]
        assert "\ninterrupted\n" in output and "torn down" in output, output[-4000:]
        assert leftovers(output, demo.pid, shared_before) == []
    finally:
        cleanup_all()
