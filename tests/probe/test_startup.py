"""Start-up: a probe run imports only what it needs (docs/probe.md "Start-up").

Which modules load, not how long they take: a timing assertion would be flaky on shared
machines, a module list is not. ``-X importtime`` names every module an interpreter
imports, also those imported by other modules.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# Costly in start-up and never needed by a run without --pushgateway (prometheus_client,
# and with it urllib, http, ssl), or not at all (icmplib pulled in asyncio; statistics,
# hashlib's OpenSSL, threads, subprocesses).
NEVER_IN_A_RUN = frozenset(
    {
        "prometheus_client",
        "traceroute_probe.metrics",
        "ssl",
        "_ssl",
        "http.client",
        "urllib.request",
        "base64",
        "icmplib",
        "asyncio",
        "statistics",
        "_hashlib",
        "concurrent.futures",
        "threading",
        "subprocess",
        "logging",
    }
)
TRANSPORTS = {
    "icmp_ping",
    "icmp_raw",
    "udp",
    "tcp_connect",
    "tcp_raw",
}


def imported_modules(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "traceroute_probe" in names, proc.stderr[-2000:]
    return names


def test_importing_the_cli_loads_no_costly_module() -> None:
    loaded = imported_modules("-c", "import traceroute_probe.cli")
    assert "traceroute_probe.wave" in loaded  # the test sees our own imports
    assert not (loaded & NEVER_IN_A_RUN)
    assert not {m for m in loaded if m.startswith("traceroute_probe.transports.")} & {
        f"traceroute_probe.transports.{t}" for t in TRANSPORTS
    }, "a transport module is imported before a run needs it"


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_run_without_pushgateway_loads_no_costly_module(fmt: str, tmp_path) -> None:
    # A target of the wrong family: the whole CLI path (parse, resolve, wave, result,
    # output, termination message) without sending a packet.
    loaded = imported_modules(
        "-m",
        "traceroute_probe.cli",
        "--format",
        fmt,
        "--ip-family",
        "6",
        "--termination-log",
        str(tmp_path / "log"),
        "--label",
        "team=net",
        "10.0.0.1",
    )
    assert {"traceroute_probe.result", "traceroute_probe.table", "json"} <= loaded
    assert not (loaded & NEVER_IN_A_RUN)


def test_a_run_loads_only_its_transport() -> None:
    code = (
        "import sys\n"
        "from traceroute_probe.options import TargetSpec, WaveOptions\n"
        "from traceroute_probe.wave import run_wave\n"
        "run_wave([TargetSpec('lo', '127.0.0.1', 4, 'x')],"
        " WaveOptions(protocol='udp', socket_mode='dgram', max_hops=1, timeout=0.5))\n"
    )
    loaded = imported_modules("-c", code)
    transports = {
        m.rsplit(".", 1)[1] for m in loaded if m.startswith("traceroute_probe.transports.")
    }
    assert transports & TRANSPORTS == {"udp"}
