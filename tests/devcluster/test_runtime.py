"""The /proc readers the benchmarks and the operator harness share."""

from __future__ import annotations

import subprocess
import sys

from devcluster.runtime import process_cpu_seconds, process_status_kib

# A child that holds 64 MiB resident and has burnt some CPU, then waits for stdin to close.
CHILD = """
import sys, time
block = bytearray(64 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
end = time.process_time() + 0.2
while time.process_time() < end:
    pass
print("ready", flush=True)
sys.stdin.read()
"""


def test_rss_peak_and_cpu_of_a_child_process() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        rss = process_status_kib(child.pid, "VmRSS")
        assert rss >= 64 * 1024
        assert process_status_kib(child.pid, "VmHWM") >= rss
        assert process_status_kib(child.pid, "NoSuchLine") == 0
        assert process_cpu_seconds(child.pid) >= 0.2
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
