"""Start and stop the real test environment by hand.

    python -m devcluster up        # control plane + Pushgateway + Prometheus, detached
    python -m devcluster status    # what runs, kubeconfig, URLs
    python -m devcluster pods      # run pending pods (pod runner) until Ctrl-C
    python -m devcluster down      # stop what `up` started
    python -m devcluster cleanup   # also remove leftovers of crashed test runs and labs
    python -m devcluster demo      # the README's demo (make demo); --once: make demo-once

State lives in $TROP_RUNTIME (default /run/traceroute-operator): env.json plus one directory
per component with its logs, certificates and pidfiles.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KUBECTL, KubeRest
from devcluster.lab import cleanup_all
from devcluster.podrunner import HOST_NETNS, PodRunner
from devcluster.promstack import Prometheus, Pushgateway
from devcluster.runtime import RUNTIME_ROOT, RuntimeDir, cleanup_stale, http_ok

STATE_FILE = RUNTIME_ROOT / "env.json"

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Command, Callable[[argparse.ArgumentParser], None] | None]] = {}


def command(
    name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Command], Command]:
    """Register a subcommand (the demo adds itself the same way)."""

    def register(fn: Command) -> Command:
        COMMANDS[name] = (help_text, fn, arguments)
        return fn

    return register


def read_state() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(STATE_FILE.read_text())
        return state
    except (FileNotFoundError, ValueError):
        return None


def _component_alive(rundir: str) -> bool:
    path = Path(rundir)
    records = RuntimeDir.existing(path).records() if path.is_dir() else []
    return bool(records) and all(r.alive() for r in records)


def _print_state(state: dict[str, Any]) -> None:
    cp, pgw, prom = state["controlplane"], state["pushgateway"], state["prometheus"]
    print(f"kube-apiserver  {cp['url']}  (Kubernetes {cp['version']})")
    print(f"kubeconfig      {cp['kubeconfig']}")
    print(f"Pushgateway     {pgw['url']}")
    print(f"Prometheus      {prom['url']}  (config {prom['config']})")
    print()
    print(f"  export KUBECONFIG={cp['kubeconfig']}")
    print(f"  {KUBECTL} get namespaces")
    print("  pods stay Pending until a pod runner runs: python -m devcluster pods")


@command("up", "start control plane, Pushgateway and Prometheus (detached)")
def cmd_up(args: argparse.Namespace) -> int:
    state = read_state()
    if state and all(_component_alive(c["rundir"]) for c in state.values()):
        print("already up:")
        _print_state(state)
        return 0
    if state:
        cmd_down(args)
    cleanup_stale()
    started: list[Any] = []
    try:
        cp = ControlPlane(detached=True).start()
        started.append(cp)
        pgw = Pushgateway(detached=True).start()
        started.append(pgw)
        prom = Prometheus(pushgateway=pgw, detached=True).start()
        started.append(prom)
    except BaseException:
        for component in reversed(started):
            component.stop()
        raise
    state = {
        "controlplane": {**cp.state(), "rundir": str(cp.workdir)},
        "pushgateway": {"url": pgw.url, "rundir": str(pgw.workdir)},
        "prometheus": {
            "url": prom.url,
            "rundir": str(prom.workdir),
            "config": str(prom.config_path),
        },
    }
    STATE_FILE.write_text(json.dumps(state, indent=2))
    _print_state(state)
    return 0


@command("down", "stop what `up` started")
def cmd_down(args: argparse.Namespace) -> int:
    state = read_state()
    if not state:
        print("nothing is up")
        return 0
    for name, component in state.items():
        path = Path(component["rundir"])
        if path.is_dir():
            RuntimeDir.existing(path).remove()
        print(f"stopped {name}")
    STATE_FILE.unlink(missing_ok=True)
    return 0


@command("status", "show what runs")
def cmd_status(args: argparse.Namespace) -> int:
    state = read_state()
    if not state:
        print("nothing is up (python -m devcluster up)")
        return 1
    _print_state(state)
    print()
    healthy = True
    try:
        with KubeRest(Path(state["controlplane"]["kubeconfig"])) as api:
            version = api.get("/version")["gitVersion"]
        print(f"kube-apiserver: ok ({version})")
    except Exception as exc:
        print(f"kube-apiserver: DOWN ({exc})")
        healthy = False
    for name in ("pushgateway", "prometheus"):
        ok = http_ok(state[name]["url"] + "/-/ready")
        print(f"{name}: {'ok' if ok else 'DOWN'}")
        healthy &= ok
    procs = all(_component_alive(c["rundir"]) for c in state.values())
    print(f"processes: {'all alive' if procs else 'SOME DIED (see logs in the run dirs)'}")
    return 0 if healthy and procs else 1


def _pods_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", help="only pods of this namespace (default: all)")
    parser.add_argument("--selector", help="only pods matching this label selector")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--netns", help="run pods in this named network namespace")
    where.add_argument(
        "--host-network",
        action="store_true",
        help="run pods in the host network namespace (reach the apiserver on loopback)",
    )


@command("pods", "run pending pods of the `up` cluster until Ctrl-C", _pods_arguments)
def cmd_pods(args: argparse.Namespace) -> int:
    state = read_state()
    if not state:
        print("nothing is up (python -m devcluster up)", file=sys.stderr)
        return 1
    netns = HOST_NETNS if args.host_network else args.netns
    runner = PodRunner(
        Path(state["controlplane"]["kubeconfig"]),
        namespace=args.namespace,
        label_selector=args.selector,
        netns_for_pod=(lambda pod: netns) if netns else None,
        max_runtime_seconds=None,  # long-running pods (the operator) are fine by hand
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with runner:
        print(f"pod runner on node {runner.node_name}; Ctrl-C to stop")
        seen: set[str] = set()
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(1.0):
                for run in runner.finished_runs():
                    if run.uid not in seen:
                        seen.add(run.uid)
                        codes = [c.exit_code for c in run.containers]
                        print(f"{run.namespace}/{run.name}: {run.phase} exit={codes}")
    return 0


def _cleanup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-manual", action="store_true", help="keep the environment started by `up`"
    )


@command(
    "cleanup", "remove leftovers of crashed runs (and the `up` environment)", _cleanup_arguments
)
def cmd_cleanup(args: argparse.Namespace) -> int:
    removed = [str(p) for p in cleanup_stale(include_manual=not args.keep_manual)]
    if not args.keep_manual:
        STATE_FILE.unlink(missing_ok=True)
    removed += [str(item) for item in cleanup_all()]
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to clean up")
    return 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once",
        "--no-wait",
        dest="once",
        action="store_true",
        help="run to the last step (the alert fired), then tear down and exit 0 "
        "(make demo-once); without it the demo waits for Ctrl-C",
    )


@command(
    "demo", "the whole product end to end: helm install .. route flip .. alert", _demo_arguments
)
def cmd_demo(args: argparse.Namespace) -> int:
    demo = importlib.import_module("devcluster.demo")  # heavier imports: only when asked
    code: int = demo.run(wait=not args.once)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _fn, arguments) in COMMANDS.items():
        subparser = sub.add_parser(name, help=help_text)
        if arguments is not None:
            arguments(subparser)
    args = parser.parse_args(argv)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
