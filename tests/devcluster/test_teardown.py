"""A node leaves nothing behind: neither when it stops nor, after `make clean-lab`, when
the process that ran it was killed (kubelet, containerd, its shims and containers, mounts
under the node, the pod's network namespace, cgroups, CNI cache entries)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devcluster.lab import cleanup_all
from devcluster.runtime import (
    ProcessRecord,
    cgroup_dirs,
    cleanup_stale,
    mounts_under,
    runtime_dirs,
)
from tests.fixtures.lab import require_root

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def start_one_node(mode: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.devcluster.one_node", mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        pytest.fail(f"one_node {mode} exited with {proc.returncode} before it was up")
    return proc, json.loads(line)


def alive(pid: int, start_time: int | None) -> bool:
    """Running (a zombie waiting for init to reap it is gone already)."""
    return ProcessRecord(str(pid), pid, start_time).alive()


# containerd 1.6 keeps these outside the node's directories (not configurable)
SHARED_DIRS = (Path("/run/containerd/s"), Path("/var/lib/cni/results"))


def shared_entries() -> set[Path]:
    return {p for d in SHARED_DIRS if d.is_dir() for p in d.iterdir()}


def leftovers(state: dict[str, Any], owner: int, before: set[Path]) -> list[str]:
    found = [f"shared {p}" for p in sorted(shared_entries() - before)]
    workdir = Path(state["workdir"])
    if workdir.exists():
        found.append(f"directory {workdir}")
    found += [f"mount {m}" for m in mounts_under(workdir)]
    found += [f"cgroup {d}" for d in cgroup_dirs(state["cgroup"])]
    found += [f"process {pid}" for pid, start in state["processes"] if alive(pid, start)]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    if any(line.split()[0] == state["netns"] for line in netns.stdout.splitlines() if line):
        found.append(f"netns {state['netns']}")
    for directory in runtime_dirs():
        owner_file = directory / "owner.json"
        if owner_file.is_file() and json.loads(owner_file.read_text()).get("owner_pid") == owner:
            found.append(f"runtime directory {directory}")
    return found


def test_a_stopped_node_leaves_nothing() -> None:
    require_root()
    before = shared_entries()
    proc, state = start_one_node("stop")
    # what there is to clean: kubelet, containerd, a shim, the pause container
    assert len(state["processes"]) >= 4, state
    assert proc.wait(timeout=120) == 0
    assert leftovers(state, proc.pid, before) == []


def test_a_killed_node_is_cleaned_by_clean_lab() -> None:
    require_root()
    before = shared_entries()
    proc, state = start_one_node("hold")
    # the check below can fail: a running node has entries there
    assert shared_entries() - before
    assert len(state["processes"]) >= 4, state
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # something did survive the kill: the shims and containers are nobody's children
    assert any(alive(pid, start) for pid, start in state["processes"])
    # what `make clean-lab` runs
    cleanup_stale()
    cleanup_all()
    assert leftovers(state, proc.pid, before) == []
