"""The README's demo (`make demo` = `python -m devcluster demo`) runs end to end.

Everything real: control plane, `helm install` of the chart, the operator pod with the
chart's RBAC, probe pods in the lab, a route flip, the PathChanged Event, Prometheus
firing TraceroutePathChanged from the generated PrometheusRule; then nothing is left.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from devcluster.lab import cleanup_all
from tests.fixtures.lab import require_root

pytestmark = pytest.mark.slow

TIMEOUT_S = 300


def _lab_namespaces(pid: int) -> list[str]:
    names = subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True
    ).stdout
    return [line.split()[0] for line in names.splitlines() if line.startswith(f"trop-{pid}-")]


def test_demo_runs_end_to_end_and_leaves_nothing_behind() -> None:
    require_root()
    demo = subprocess.Popen(
        [sys.executable, "-m", "devcluster", "demo", "--no-wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = demo.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        demo.send_signal(signal.SIGTERM)  # the demo tears down on SIGTERM too
        output, _ = demo.communicate(timeout=60)
        pytest.fail(f"demo took longer than {TIMEOUT_S} s:\n{output[-4000:]}")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        cleanup_all()  # only labs of dead owners: a crashed demo's, never another test's
    assert demo.returncode == 0, output[-4000:]
    for step in range(1, 6):
        assert f"==> {step}/6 " in output
    # the operator read both runs: first path a (5 hops), then path b (6 hops)
    assert re.search(r"lab-target\s+\[\"[\d.]+\"\]\s+\* \* \* \* \*\s+6\s+1/1\s+1\s", output), (
        output
    )
    # the Event names the hops that changed, TTL by TTL
    event = re.search(r"Warning\s+PathChanged\s+tracerouteprobe/lab-target\s+(.*)", output)
    assert event, output[-4000:]
    assert "hops: 5 -> 6" in event.group(1)
    assert re.search(r"ttl 2: 10\.\d+\.2\.2 -> 10\.\d+\.5\.2", event.group(1)), event.group(1)
    # the probe table shows the destination reached, as uid 65534 without capabilities
    assert re.search(r"via icmp: reached in 5 hops", output), output
    assert re.search(r"ALERT TraceroutePathChanged \[firing\] target=10\.", output), output
    assert "torn down" in output
    assert not _lab_namespaces(demo.pid), "lab namespaces left behind"
