"""Benchmark of the probe against reference tracers in the network lab.

``python -m devcluster.bench.probe`` (``make bench-probe``; needs root for the lab). A chain
of 8 routers with 5-20 ms one-way delay per link; scenarios: all hops answer, two
silent routers, silent destination, rate-limited routers (Linux default per-source
limit: 6 Time Exceeded, then 1/s; every run then starts with full buckets, 7 s apart).
Prints wall-time medians over repeated runs, hops found vs the lab's truth, false ``*``
(a responsive hop shown silent) and our peak RSS, then the ratios the issue targets.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from devcluster.lab import Lab, Topology

PYTHON = sys.executable
NOBODY = 65534
ROUTERS = 8
LINK_DELAYS_MS = [5.0, 10.0, 15.0, 20.0, 5.0, 10.0, 15.0, 20.0, 12.0]  # 9 links
RUN_TIMEOUT_S = 150.0
BUDGET_S = 30.0  # per tool and scenario: fewer repetitions for slow tools
RATELIMIT_PAUSE_S = 7.0

_IN_PROCESS = r"""
import json, resource, sys, time
from traceroute_probe.options import TargetSpec, WaveOptions
from traceroute_probe.wave import run_wave
addr = sys.argv[1]
t0 = time.perf_counter()
(result,) = run_wave([TargetSpec(addr, addr, 4, "bench/" + addr)], WaveOptions())
elapsed = time.perf_counter() - t0
print(json.dumps({"elapsed": elapsed, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "path": [h.addresses for h in result.hops]}))
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

# Runs a command and reports its peak RSS (KiB) on stderr's last line.
_RSS_WRAPPER = r"""
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=sys.stdout, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(p.returncode)
"""


@dataclass
class Sample:
    seconds: float
    path: list[list[str]]
    rss_kib: int | None = None


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    def median(self) -> float | None:
        return statistics.median(s.seconds for s in self.samples) if self.samples else None


Runner = Callable[[Lab, str], Sample]

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


def _timed(lab: Lab, argv: Sequence[str], user: int | None = None) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    proc = lab.run("probe", list(argv), user=user, timeout=RUN_TIMEOUT_S)
    return time.perf_counter() - t0, proc.stdout, proc.stderr


def run_probe_process(lab: Lab, addr: str) -> Sample:
    argv = [
        PYTHON,
        "-c",
        _RSS_WRAPPER,
        PYTHON,
        "-m",
        "traceroute_probe.cli",
        "--format",
        "json",
        "--termination-log",
        "/dev/null",
        addr,
    ]
    seconds, out, err = _timed(lab, argv, user=NOBODY)
    doc = json.loads(out)
    rss = int(err.strip().splitlines()[-1])
    return Sample(seconds, [h["addresses"] for h in doc["hops"]], rss)


def run_probe_in_process(lab: Lab, addr: str) -> Sample:
    _, out, _ = _timed(lab, [PYTHON, "-c", _IN_PROCESS, addr], user=NOBODY)
    doc = json.loads(out)
    return Sample(doc["elapsed"], doc["path"], doc["rss_kib"])


def run_icmplib(lab: Lab, addr: str) -> Sample:
    _, out, _ = _timed(lab, [PYTHON, "-c", _ICMPLIB, addr])  # needs root (raw sockets)
    doc = json.loads(out)
    return Sample(doc["elapsed"], doc["path"])


def run_traceroute(lab: Lab, addr: str) -> Sample:
    seconds, out, _ = _timed(lab, ["traceroute", "-n", addr])
    return Sample(seconds, _text_path(out))


def run_mtr(lab: Lab, addr: str) -> Sample:
    seconds, out, _ = _timed(lab, ["mtr", "-r", "-c1", "-n", addr])
    return Sample(seconds, _text_path(out))


def run_scamper(lab: Lab, addr: str) -> Sample:
    seconds, out, _ = _timed(
        lab, ["scamper", "-O", "text", "-c", "trace -P icmp-paris", "-i", addr]
    )
    return Sample(seconds, _text_path(out))


TOOLS: dict[str, Runner] = {
    "probe (process)": run_probe_process,
    "probe (in-process)": run_probe_in_process,
    "icmplib.traceroute": run_icmplib,
    "traceroute": run_traceroute,
    "mtr -r -c1": run_mtr,
    "scamper paris": run_scamper,
}


@dataclass
class Scenario:
    name: str
    silent: tuple[str, ...] = ()
    rate_limited: bool = False


SCENARIOS = [
    Scenario("all hops answer"),
    Scenario("2 silent routers", silent=("r3", "r6")),
    Scenario("silent destination", silent=("target",)),
    Scenario("rate-limited routers", rate_limited=True),
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
        if scenario.rate_limited:
            lab.set_icmp_ratelimit(node, ms=1000, burst=50, per_sec=1000)  # Linux defaults
    if not scenario.rate_limited:
        lab.lift_icmp_ratelimits(burst=10000)
    for node in scenario.silent:
        lab.silence(node)


def bench(reps: int, tools: Sequence[str], scenarios: Sequence[Scenario]) -> None:
    results: dict[tuple[str, str], Cell] = {}
    truths: dict[str, tuple[list[str], set[int]]] = {}
    with Lab(Topology.chain(routers=ROUTERS, link_delay_ms=LINK_DELAYS_MS)) as lab:
        addr = lab.addr("target")
        truth = lab.truth("probe", "target")
        nodes = [f"r{i}" for i in range(1, ROUTERS + 1)] + ["target"]
        for scenario in scenarios:
            _configure(lab, scenario)
            silent_ttls = {nodes.index(n) + 1 for n in scenario.silent}
            truths[scenario.name] = (truth, silent_ttls)
            for tool in tools:
                cell = results[(scenario.name, tool)] = Cell()
                spent = 0.0
                for rep in range(reps):
                    if scenario.rate_limited:
                        time.sleep(RATELIMIT_PAUSE_S)  # buckets full again for every run
                    try:
                        sample = TOOLS[tool](lab, addr)
                    except (subprocess.TimeoutExpired, ValueError, IndexError, KeyError) as err:
                        cell.error = f"{type(err).__name__}: {err}"[:80]
                        break
                    cell.samples.append(sample)
                    spent += sample.seconds
                    if rep == 0 and sample.seconds * reps > BUDGET_S:
                        break
                print(
                    f"  {scenario.name:<22} {tool:<20} {_fmt(cell.median())} s "
                    f"({len(cell.samples)} runs)",
                    file=sys.stderr,
                    flush=True,
                )
    _report(results, truths, tools, scenarios)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _report(
    results: dict[tuple[str, str], Cell],
    truths: dict[str, tuple[list[str], set[int]]],
    tools: Sequence[str],
    scenarios: Sequence[Scenario],
) -> None:
    print()
    print(
        "| scenario | tool | runs | median wall s | hops found / responsive | false * "
        "| peak RSS MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for scenario in scenarios:
        truth, silent = truths[scenario.name]
        responsive = len(truth) - len(silent)
        for tool in tools:
            cell = results[(scenario.name, tool)]
            if not cell.samples:
                print(f"| {scenario.name} | {tool} | 0 | {cell.error} | | | |")
                continue
            scores = [_score(s.path, truth, silent) for s in cell.samples]
            found = statistics.median(f for f, _ in scores)
            stars = max(s for _, s in scores)
            rss = [s.rss_kib for s in cell.samples if s.rss_kib is not None]
            rss_text = f"{max(rss) / 1024:.1f}" if rss else ""
            print(
                f"| {scenario.name} | {tool} | {len(cell.samples)} | {_fmt(cell.median())} "
                f"| {found:g} / {responsive} | {stars} | {rss_text} |"
            )
    print()
    print("Targets (ratios of medians; ours = probe (process) unless noted):")
    print(
        "| scenario | fastest other tool | ours / fastest other | ours / traceroute "
        "| icmplib / ours | in-process / traceroute |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for scenario in scenarios:
        ours = results[(scenario.name, "probe (process)")].median()
        inproc = results[(scenario.name, "probe (in-process)")].median()
        others = {
            t: results[(scenario.name, t)].median()
            for t in tools
            if not t.startswith("probe") and results[(scenario.name, t)].median() is not None
        }
        fastest = min(others, key=lambda t: others[t] or math.inf) if others else None
        tr = others.get("traceroute")
        ic = others.get("icmplib.traceroute")

        def ratio(a: float | None, b: float | None) -> str:
            return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"

        print(
            f"| {scenario.name} | {fastest} {_fmt(others.get(fastest) if fastest else None)} s "
            f"| {ratio(ours, others.get(fastest) if fastest else None)} | {ratio(ours, tr)} "
            f"| {ratio(ic, ours)} | {ratio(inproc, tr)} |"
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
