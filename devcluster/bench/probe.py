"""Benchmark of the probe against reference tracers in the network lab.

``python -m devcluster.bench.probe`` (``make bench-probe``; needs root for the lab). A chain
of 8 routers with 5-20 ms one-way delay per link (destination RTT about 226 ms).

Scenarios: all hops answer, two silent routers, silent destination (ICMP limits lifted:
these measure speed), then with the KERNEL DEFAULT ICMP rate limits (never lifted): rate-
limited routers, back-to-back runs (two runs within a second, the second is scored), 16
flows, and TCP (our connect() probes as uid 65534; the others' raw SYNs as root), also
with two silent routers (scamper left out: its TCP trace printed nothing here). Runs
under default limits start 7 s apart (buckets full again).

Every tool is timed as a whole process, from ``ip netns exec`` to exit (GNU time gives its
peak RSS); our bytecode is compiled first, as the image ships it. Prints medians, hops
found vs the lab's truth, false ``*`` (a responsive hop shown silent), destination loss,
then ours vs each tool, the fastest other and the fastest complete other tool.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devcluster.lab import Lab, Topology

PYTHON = sys.executable
NOBODY = 65534
ROUTERS = 8
LINK_DELAYS_MS = [5.0, 10.0, 15.0, 20.0, 5.0, 10.0, 15.0, 20.0, 12.0]  # 9 links
RUN_TIMEOUT_S = 150.0
BUDGET_S = 30.0  # per tool and scenario: fewer repetitions for slow tools
RATELIMIT_PAUSE_S = 7.0
LIMITED_REPS = 3  # at most, under kernel limits: every run waits 7 s first
TCP_PORT = 443  # closed on the target: its RST ends a trace
CACHE = Path(os.environ.get("TROP_CACHE", "/var/cache/traceroute-operator"))
TRIPPY_VERSION = "0.13.0"
TRIP = CACHE / f"trippy-{TRIPPY_VERSION}" / "bin" / "trip"
TRIPPY_TUNED = ["-i", "250ms", "-g", "50ms", "-T", "250ms"]
PROBE_SCRIPT = Path(PYTHON).parent / "traceroute-probe"
PROBE_PACKAGE = Path(__file__).resolve().parents[2] / "probe" / "traceroute_probe"
# Linux defaults (net.ipv4.icmp_ratelimit, icmp_msgs_burst, icmp_msgs_per_sec): restored,
# not lifted, for the scenarios that keep the kernel's limits.
KERNEL_DEFAULT_LIMITS = {"ms": 1000, "burst": 50, "per_sec": 1000}

_IN_PROCESS = r"""
import json, resource, sys, time
from traceroute_probe.options import TargetSpec, WaveOptions
from traceroute_probe.wave import run_wave
addr, protocol, flows = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
(result,) = run_wave([TargetSpec(addr, addr, 4, "bench/" + addr)],
                     WaveOptions(protocol=protocol, flows=flows))
elapsed = time.perf_counter() - t0
print(json.dumps({"elapsed": elapsed, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "path": [h.addresses for h in result.hops],
                  "destination_loss": result.destination_loss_ratio}))
"""

_ICMPLIB = r"""
import json, sys, time
import icmplib
t0 = time.perf_counter()
hops = icmplib.traceroute(sys.argv[1])
elapsed = time.perf_counter() - t0
path = {}
for h in hops:
    path[h.distance] = [h.address]
n = max(path, default=0)
print(json.dumps({"elapsed": elapsed, "path": [path.get(t, []) for t in range(1, n + 1)]}))
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    silent: tuple[str, ...] = ()
    kernel_limits: bool = False  # keep the kernel's ICMP rate limits (else lifted)
    back_to_back: bool = False  # two runs within a second; the second is scored
    flows: int = 3  # our flows
    protocol: str = "icmp"
    only: tuple[str, ...] = ()  # run only these tools (default: all that speak the protocol)


@dataclass
class Sample:
    seconds: float
    path: list[list[str]]
    rss_kib: int | None = None
    destination_loss: float | None = None  # ours only (JSON destination_loss_ratio)


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    def median(self) -> float | None:
        return statistics.median(s.seconds for s in self.samples) if self.samples else None


Runner = Callable[[Lab, str, Scenario], Sample]

_HOP_LINE = re.compile(r"^\s*(\d+)[.|\-\s]+(.*)$")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")


def _text_path(text: str) -> list[list[str]]:
    """Per-TTL addresses from traceroute/scamper/mtr text output."""
    hops: dict[int, list[str]] = {}
    for line in text.splitlines():
        match = _HOP_LINE.match(line)
        if not match or line.lower().startswith(("traceroute", "start", "host")):
            continue
        ttl = int(match.group(1))
        hops[ttl] = sorted(set(_IPV4.findall(match.group(2))))
    n = max(hops, default=0)
    return [hops.get(t, []) for t in range(1, n + 1)]


def _timed(lab: Lab, argv: Sequence[str], user: int | None = None) -> tuple[float, str, int]:
    """Wall time, stdout and peak RSS (KiB) of one whole process in the probe's namespace.

    GNU time forks the tool and reports its maximum RSS on stderr's last line (the bench's
    own rusage would count the pages a fork copies from this Python process); it costs
    every tool the same fork, about a millisecond."""
    t0 = time.perf_counter()
    proc = lab.popen(
        "probe",
        ["/usr/bin/time", "-f", "%M", *argv],
        user=user,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    seconds = time.perf_counter() - t0
    lines = err.strip().splitlines()
    return seconds, out, int(lines[-1]) if lines and lines[-1].isdigit() else 0


def _probe_argv(scenario: Scenario, addr: str) -> list[str]:
    argv = [str(PROBE_SCRIPT), "--format", "json"]  # the console script, as the image runs it
    argv += ["--termination-log", "/dev/null", "--flows", str(scenario.flows)]
    if scenario.protocol == "tcp":
        argv += ["--protocol", "tcp", "--port", str(TCP_PORT)]
    return [*argv, addr]


def run_probe_process(lab: Lab, addr: str, scenario: Scenario) -> Sample:
    seconds, out, rss = _timed(lab, _probe_argv(scenario, addr), user=NOBODY)
    doc = json.loads(out)
    return Sample(
        seconds, [h["addresses"] for h in doc["hops"]], rss, float(doc["destination_loss_ratio"])
    )


def run_probe_in_process(lab: Lab, addr: str, scenario: Scenario) -> Sample:
    argv = [PYTHON, "-c", _IN_PROCESS, addr, scenario.protocol, str(scenario.flows)]
    _, out, _ = _timed(lab, argv, user=NOBODY)
    doc = json.loads(out)
    return Sample(doc["elapsed"], doc["path"], doc["rss_kib"], doc["destination_loss"])


def run_icmplib(lab: Lab, addr: str, scenario: Scenario) -> Sample:
    seconds, out, rss = _timed(lab, [PYTHON, "-c", _ICMPLIB, addr])  # root: raw sockets
    doc = json.loads(out)
    return Sample(seconds, doc["path"], rss)


def run_traceroute(lab: Lab, addr: str, scenario: Scenario) -> Sample:
    tcp = ["-T", "-p", str(TCP_PORT)] if scenario.protocol == "tcp" else []
    seconds, out, rss = _timed(lab, ["traceroute", "-n", *tcp, addr])
    return Sample(seconds, _text_path(out), rss)


def run_mtr(lab: Lab, addr: str, scenario: Scenario) -> Sample:
    tcp = ["-T", "-P", str(TCP_PORT)] if scenario.protocol == "tcp" else []
    seconds, out, rss = _timed(lab, ["mtr", "-r", "-c1", "-n", *tcp, addr])
    return Sample(seconds, _text_path(out), rss)


def run_scamper(lab: Lab, addr: str, scenario: Scenario) -> Sample:
    argv = ["scamper", "-O", "text", "-c", "trace -P icmp-paris", "-i", addr]
    seconds, out, rss = _timed(lab, argv)
    return Sample(seconds, _text_path(out), rss)


def _trippy(tuned: bool) -> Runner:
    def run(lab: Lab, addr: str, scenario: Scenario) -> Sample:
        argv = [str(TRIP), "-m", "json", "-C", "1", *(TRIPPY_TUNED if tuned else [])]
        if scenario.protocol == "tcp":
            argv += ["-p", "tcp", "-P", str(TCP_PORT)]
        seconds, out, rss = _timed(lab, [*argv, addr])
        doc = json.loads(out)
        by_ttl = {h["ttl"]: sorted(x["ip"] for x in h["hosts"]) for h in doc["hops"]}
        n = max(by_ttl, default=0)
        return Sample(seconds, [by_ttl.get(t, []) for t in range(1, n + 1)], rss)

    return run


OURS = "probe (process)"
TOOLS: dict[str, Runner] = {
    OURS: run_probe_process,
    "probe (in-process)": run_probe_in_process,
    "trippy tuned": _trippy(tuned=True),
    "trippy defaults": _trippy(tuned=False),
    "icmplib.traceroute": run_icmplib,
    "traceroute": run_traceroute,
    "mtr -r -c1": run_mtr,
    "scamper paris": run_scamper,
}
# icmplib has no TCP; scamper 20211212's "trace -P tcp" printed no trace at all here.
TCP_TOOLS = [t for t in TOOLS if t not in ("icmplib.traceroute", "scamper paris")]

SCENARIOS = [
    Scenario("all hops answer"),
    Scenario("2 silent routers", silent=("r3", "r6")),
    Scenario("silent destination", silent=("target",)),
    Scenario("rate-limited routers", kernel_limits=True),
    Scenario("back-to-back runs", kernel_limits=True, back_to_back=True),
    # Flows are ours alone; the fastest others run again as the yardstick.
    Scenario(
        "16 flows",
        kernel_limits=True,
        flows=16,
        only=(OURS, "probe (in-process)", "trippy tuned", "traceroute"),
    ),
    Scenario("TCP", kernel_limits=True, protocol="tcp"),
    Scenario("TCP, 2 silent routers", silent=("r3", "r6"), kernel_limits=True, protocol="tcp"),
]


def _tools_for(scenario: Scenario, tools: Sequence[str]) -> list[str]:
    return [
        t
        for t in tools
        if (scenario.protocol != "tcp" or t in TCP_TOOLS)
        and (not scenario.only or t in scenario.only)
    ]


def _score(path: list[list[str]], truth: list[str], silent_ttls: set[int]) -> tuple[int, int]:
    """(hops found at the right TTL, false stars on responsive TTLs)."""
    found = false_star = 0
    for ttl, expected in enumerate(truth, start=1):
        if ttl in silent_ttls:
            continue
        seen = path[ttl - 1] if ttl <= len(path) else []
        if expected in seen:
            found += 1
        elif not seen:
            false_star += 1
    return found, false_star


def _configure(lab: Lab, scenario: Scenario) -> None:
    for node in lab.topology.nodes:
        lab.unsilence(node)
        if scenario.kernel_limits:
            lab.set_icmp_ratelimit(node, **KERNEL_DEFAULT_LIMITS)
    if not scenario.kernel_limits:
        lab.lift_icmp_ratelimits(burst=10000)
    for node in scenario.silent:
        lab.silence(node)


def _precompile() -> None:
    """Our bytecode, as the image ships it (the runs are uid 65534: they cannot write it)."""
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", str(PROBE_PACKAGE)], check=True, env=_env_writing()
    )


def _env_writing() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _measure(lab: Lab, tool: str, addr: str, scenario: Scenario, reps: int) -> Cell:
    cell = Cell()
    if scenario.kernel_limits:
        reps = min(reps, LIMITED_REPS)
    for rep in range(reps):
        if scenario.kernel_limits:
            time.sleep(RATELIMIT_PAUSE_S)  # buckets full again for every run (or pair)
        try:
            if scenario.back_to_back:
                TOOLS[tool](lab, addr, scenario)  # the first run of the pair drains buckets
            sample = TOOLS[tool](lab, addr, scenario)
        except (subprocess.TimeoutExpired, ValueError, IndexError, KeyError) as err:
            cell.error = f"{type(err).__name__}: {err}"[:80]
            break
        cell.samples.append(sample)
        if rep == 0 and sample.seconds * reps > BUDGET_S:
            break
    return cell


Results = dict[tuple[str, str], Cell]


def bench(reps: int, tools: Sequence[str], scenarios: Sequence[Scenario]) -> None:
    if not TRIP.exists() and any(t.startswith("trippy") for t in tools):
        subprocess.run(
            ["bash", str(Path(__file__).parents[1] / "env" / "install-trippy.sh")], check=True
        )
    _precompile()
    results: Results = {}
    truths: dict[str, tuple[list[str], set[int]]] = {}
    with Lab(Topology.chain(routers=ROUTERS, link_delay_ms=LINK_DELAYS_MS)) as lab:
        addr = lab.addr("target")
        truth = lab.truth("probe", "target")
        nodes = [f"r{i}" for i in range(1, ROUTERS + 1)] + ["target"]
        for scenario in scenarios:
            _configure(lab, scenario)
            truths[scenario.name] = (truth, {nodes.index(n) + 1 for n in scenario.silent})
            for tool in _tools_for(scenario, tools):
                cell = results[(scenario.name, tool)] = _measure(lab, tool, addr, scenario, reps)
                print(
                    f"  {scenario.name:<22} {tool:<20} {_fmt(cell.median())} s "
                    f"({len(cell.samples)} runs) {cell.error or ''}",
                    file=sys.stderr,
                    flush=True,
                )
    _report(results, truths, tools, scenarios)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _report(
    results: Results,
    truths: dict[str, tuple[list[str], set[int]]],
    tools: Sequence[str],
    scenarios: Sequence[Scenario],
) -> None:
    print()
    print(
        "| scenario | tool | runs | median wall s | hops found / responsive | false * "
        "| destination loss | peak RSS MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for scenario in scenarios:
        truth, silent = truths[scenario.name]
        for tool in _tools_for(scenario, tools):
            print(_row(scenario, tool, results[(scenario.name, tool)], truth, silent))
    _report_ratios(results, truths, tools, scenarios)


def _row(scenario: Scenario, tool: str, cell: Cell, truth: list[str], silent: set[int]) -> str:
    responsive = len(truth) - len(silent)
    if not cell.samples:
        return f"| {scenario.name} | {tool} | 0 | {cell.error} | | | | |"
    scores = [_score(s.path, truth, silent) for s in cell.samples]
    found = statistics.median(f for f, _ in scores)
    stars = max(s for _, s in scores)
    losses = [s.destination_loss for s in cell.samples if s.destination_loss is not None]
    if losses:
        loss = f"{max(losses):.0%} (max)"
    elif "target" in scenario.silent:
        loss = "(silent)"
    else:
        reached = sum(
            1 for s in cell.samples if len(s.path) == len(truth) and truth[-1] in s.path[-1]
        )
        loss = f"reached {reached}/{len(cell.samples)}"
    rss = [s.rss_kib for s in cell.samples if s.rss_kib is not None]
    rss_text = f"{max(rss) / 1024:.1f}" if rss else ""
    return (
        f"| {scenario.name} | {tool} | {len(cell.samples)} | {_fmt(cell.median())} "
        f"| {found:g} / {responsive} | {stars} | {loss} | {rss_text} |"
    )


def _complete(cell: Cell, truth: list[str], silent: set[int]) -> bool:
    """Every run found every responsive hop (0 false ``*``) and, unless the destination is
    silent, reached it."""
    must_reach = len(truth) not in silent
    return bool(cell.samples) and all(
        _score(s.path, truth, silent)[1] == 0
        and (not must_reach or (len(s.path) == len(truth) and truth[-1] in s.path[-1]))
        for s in cell.samples
    )


def _fastest(medians: dict[str, float], eligible: Sequence[str]) -> tuple[str, float] | None:
    pool = [t for t in eligible if t in medians]
    if not pool:
        return None
    best = min(pool, key=medians.__getitem__)
    return best, medians[best]


def _report_ratios(
    results: Results,
    truths: dict[str, tuple[list[str], set[int]]],
    tools: Sequence[str],
    scenarios: Sequence[Scenario],
) -> None:
    """Ours against the fastest other tool that found anything, against the fastest one
    whose every run was complete (0 false ``*``, destination reached), and each tool."""
    others = [t for t in tools if not t.startswith("probe")]
    print()
    print("Ours (probe (process), whole process) / each tool, ratio of medians (< 1: ours faster):")
    print(
        "| scenario | fastest other | ours / it | fastest complete other | ours / it | "
        + " | ".join(others)
        + " |"
    )
    print("| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in others) + " |")
    for scenario in scenarios:
        truth, silent = truths[scenario.name]
        ours = results.get((scenario.name, OURS), Cell()).median()
        cells = {t: results[(scenario.name, t)] for t in _tools_for(scenario, others)}
        medians = {t: m for t, c in cells.items() if (m := c.median()) is not None}
        found_any = [
            t for t, c in cells.items() if any(_score(x.path, truth, silent)[0] for x in c.samples)
        ]
        complete = [t for t, c in cells.items() if _complete(c, truth, silent)]
        columns = []
        for best in (_fastest(medians, found_any), _fastest(medians, complete)):
            columns += (
                [f"{best[0]} {_fmt(best[1])} s", _ratio(ours, best[1])] if best else ["-"] * 2
            )
        print(
            f"| {scenario.name} | "
            + " | ".join(columns + [_ratio(ours, medians.get(t)) for t in others])
            + " |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.bench.probe", description=__doc__)
    parser.add_argument("--reps", type=int, default=5, help="runs per tool and scenario (max)")
    parser.add_argument("--tools", nargs="*", default=list(TOOLS), choices=list(TOOLS))
    parser.add_argument(
        "--scenarios",
        nargs="*",
        default=[s.name for s in SCENARIOS],
        choices=[s.name for s in SCENARIOS],
    )
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if s.name in args.scenarios]
    bench(max(1, min(args.reps, 20)), args.tools, chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
