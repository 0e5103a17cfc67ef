"""Scale benchmark: N probes on */5 schedules against one real Pushgateway and Prometheus.

``python -m devcluster.bench.scale`` (``make bench-scale``; Debian's prometheus-pushgateway
1.5.1 and prometheus 2.42 from ``make env``, loopback only, no root). Every probe PUTs the
exposition of the synthetic 15-hop, 3-flow, 3-probes-per-hop run
(devcluster.bench.synthetic; the target name and address differ per probe) as its own
group, over a new connection, as the probe does. Two setups side by side:

- ``old``: the chart's settings before issue 13 (consistency check on) and the per-flow
  exposition (devcluster.bench.legacy_metrics, 407 series);
- ``new``: ``--push.disable-consistency-check`` and the probe's own pooled exposition;
- ``sharded``: as ``new`` on ``--shards`` (default 3) Pushgateways, each probe on the shard
  the operator assigns it (traceroute_operator.pushgateway_policy.shard_for over the shards'
  URLs and the probe's namespace/name, imported, not copied), one scrape target per shard.

Per setup and N: fill N groups (``old`` is filled with the check off, persisted, and
reloaded with the check on: filling through the check costs O(N^2)); then PUTs at the
staggered rate of */5 (N/300 per second) for ``--steady-seconds``; then the minute-boundary
burst of unstaggered */5 schedules, all N PUTs within ``--burst-window`` seconds. Reported:
push p50/p99 (from sending; a timeout counts as the 5 s timeout), failures, Pushgateway RSS
and CPU (from /proc), Prometheus' own ``scrape_duration_seconds`` of the gateway in the
steady phase and around the burst, with failed scrapes (``up`` 0; scrape every 10 s, timeout
10 s), per gateway (shard) the p50/p99/max of its ``scrape_duration_seconds`` over both
phases, ``scrape_samples_scraped``, the series Prometheus stores per probe (min..max over the
probes, the gateway's ``push_time_seconds``/``push_failure_time_seconds`` not counted) and
how many probes have every one of their series in Prometheus. The
client, Pushgateway and Prometheus share the machine's cores, so the numbers are an upper
bound for a gateway on its own node.
Every phase is bounded in time; the default run (N = 1000, 5000) takes about 10 minutes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import http.client
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.exposition import generate_latest
from traceroute_operator.pushgateway_policy import shard_for
from traceroute_operator.stagger import identity
from traceroute_probe.metrics import JOB, build_registry

from devcluster.bench.legacy_metrics import legacy_exposition
from devcluster.bench.synthetic import TARGET, synthetic_run
from devcluster.promstack import Prometheus, Pushgateway, ScrapeTarget
from devcluster.runtime import process_cpu_seconds, process_status_kib

PUSH_TIMEOUT_S = 5.0  # the probe's own (PushSettings.timeout)
PERIOD_S = 300.0  # */5
SCRAPE_INTERVAL = "10s"
CLIENT_WORKERS = 256
FILL_WORKERS = 8
PHASE_LIMIT_S = 60.0  # a phase stops sending after this; what is left counts as failed
LOOPBACK = "127.0.0.1"
NAMESPACE = "bench"
DEFAULT_SHARDS = 3
TARGET_SCRAPE_S = 5.0  # issue 13: every scrape <= 5 s


@dataclass(frozen=True)
class Setup:
    name: str
    consistency_check: bool
    exposition: Callable[[], str]
    shards: int = 1


def _new_exposition() -> str:
    return generate_latest(build_registry(synthetic_run(), {})).decode()


def _old_exposition() -> str:
    return legacy_exposition(synthetic_run())


SETUPS = {
    "old": Setup("old", consistency_check=True, exposition=_old_exposition),
    "new": Setup("new", consistency_check=False, exposition=_new_exposition),
    "sharded": Setup(
        "sharded", consistency_check=False, exposition=_new_exposition, shards=DEFAULT_SHARDS
    ),
}


def series_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def probe_bodies(template: str, probes: int) -> list[bytes]:
    """One body per probe: the synthetic run with the probe's own target."""
    return [
        template.replace(TARGET, f"10.{100 + i // 250}.{i % 250}.1").encode() for i in range(probes)
    ]


def probe_name(index: int) -> str:
    return f"p{index:05d}"


def group_path(index: int) -> str:
    return f"/metrics/job/{JOB}/namespace/{NAMESPACE}/probe/{probe_name(index)}"


def assign(urls: Sequence[str], probes: int) -> list[int]:
    """Per probe, the index of its shard in ``urls``: the operator's own assignment."""
    position = {url: k for k, url in enumerate(urls)}
    return [position[shard_for(urls, identity(NAMESPACE, probe_name(i)))] for i in range(probes)]


# --- pushing ---------------------------------------------------------------------------


@dataclass
class Pushes:
    latencies: list[float] = field(default_factory=list)  # seconds; failures count as timeout
    failed: int = 0
    seconds: float = 0.0  # first send .. last answer

    def quantile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def put(port: int, path: str, body: bytes) -> float | None:
    """One PUT on a new connection; its latency, or None if it failed or timed out."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=PUSH_TIMEOUT_S)
    try:
        conn.request("PUT", path, body=body, headers={"Content-Type": "text/plain"})
        response = conn.getresponse()
        response.read()
        if response.status >= 300:
            return None
    except OSError:
        return None
    finally:
        conn.close()
    return time.perf_counter() - started


def paced(
    ports: Sequence[int], bodies: Sequence[bytes], order: Sequence[int], spacing: float
) -> Pushes:
    """PUT order[k] at start + k * spacing (open loop, as independent pods push)."""
    result = Pushes()
    lock = threading.Lock()

    def one(index: int) -> None:
        latency = put(ports[index], group_path(index), bodies[index])
        with lock:
            if latency is None:
                result.failed += 1
                result.latencies.append(PUSH_TIMEOUT_S)
            else:
                result.latencies.append(latency)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLIENT_WORKERS) as pool:
        for k, index in enumerate(order):
            due = started + k * spacing
            now = time.monotonic()
            if now - started > PHASE_LIMIT_S:
                result.failed += len(order) - k  # never sent: the phase ran out of time
                break
            if due > now:
                time.sleep(due - now)
            pool.submit(one, index)
    result.seconds = time.monotonic() - started
    return result


def fill(ports: Sequence[int], bodies: Sequence[bytes]) -> tuple[float, int]:
    """Create every group (probe i on ports[i]) as fast as the gateways take them;
    (seconds, failures)."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(FILL_WORKERS) as pool:
        outcomes = list(
            pool.map(lambda i: put(ports[i], group_path(i), bodies[i]), range(len(bodies)))
        )
    return time.monotonic() - started, sum(1 for o in outcomes if o is None)


# --- the gateway process ----------------------------------------------------------------


class ProcessMeter:
    """Samples the summed RSS and CPU time of processes (every shard) every 0.25 s."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_mb(self) -> float:
        return sum(process_status_kib(pid, "VmRSS") for pid in self.pids) / 1024

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.pids)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(OSError):
                self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())

    def __enter__(self) -> ProcessMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def cores(self, into: list[float]) -> Iterator[None]:
        """Append the CPU cores used while the block ran."""
        cpu, wall = self.cpu_seconds(), time.monotonic()
        yield
        into.append((self.cpu_seconds() - cpu) / max(1e-6, time.monotonic() - wall))


def gateway_args(check: bool, persistence: Path | None) -> list[str]:
    args = [] if check else ["--push.disable-consistency-check"]
    if persistence is not None:
        args += [f"--persistence.file={persistence}", "--persistence.interval=1h"]
    return args


@dataclass
class Filled:
    gateways: list[Pushgateway]
    ports: list[int]  # per probe: its gateway's port
    seconds: float
    failed: int


@contextlib.contextmanager
def filled_gateways(setup: Setup, bodies: Sequence[bytes], workdir: Path) -> Iterator[Filled]:
    """The setup's Pushgateway(s) holding every probe's group, each on its own shard."""
    if setup.consistency_check:
        if setup.shards != 1:
            raise ValueError("the consistency-check setup is measured on one gateway")
        with filled_gateway(setup, bodies, workdir) as (pgw, seconds, failed):
            yield Filled([pgw], [pgw.port] * len(bodies), seconds, failed)
        return
    with contextlib.ExitStack() as stack:
        gateways = [
            stack.enter_context(Pushgateway(listen_host=LOOPBACK, args=gateway_args(False, None)))
            for _ in range(setup.shards)
        ]
        ports = [gateways[k].port for k in assign([g.url for g in gateways], len(bodies))]
        seconds, failed = fill(ports, bodies)
        yield Filled(gateways, ports, seconds, failed)


@contextlib.contextmanager
def filled_gateway(
    setup: Setup, bodies: Sequence[bytes], workdir: Path
) -> Iterator[tuple[Pushgateway, float, int]]:
    """One Pushgateway with the consistency check on, holding every probe's group."""
    state = workdir / f"{setup.name}-{len(bodies)}.pushgateway"
    loader = Pushgateway(listen_host=LOOPBACK, args=gateway_args(False, state)).start()
    try:
        seconds, failed = fill([loader.port] * len(bodies), bodies)
        assert loader.rundir is not None
        loader.rundir.stop(grace_seconds=300)  # SIGTERM: the gateway writes the file, exits
    finally:
        loader.stop()
    pgw = Pushgateway(listen_host=LOOPBACK, args=gateway_args(True, state))
    try:
        pgw.start(timeout=300)  # loads every group from the file
        yield pgw, seconds, failed
    finally:
        pgw.stop()
        state.unlink(missing_ok=True)


# --- one measurement ---------------------------------------------------------------------


@dataclass
class Scrapes:
    """Prometheus' scrapes of the gateway within one phase."""

    max_seconds: float | None = None
    failed: float | None = None  # scrapes with up == 0

    def text(self) -> str:
        failed = f" ({self.failed:.0f} failed)" if self.failed else ""
        return _s(self.max_seconds) + failed


@dataclass(frozen=True)
class ShardScrapes:
    """One gateway's scrape durations over the whole measurement."""

    instance: str
    p50: float | None
    p99: float | None
    max: float | None
    samples: float | None

    def text(self) -> str:
        return f"{_s(self.p50)} / {_s(self.p99)} / {_s(self.max)}"


_JOB = 'job="pushgateway"'


@dataclass
class Row:
    setup: str
    probes: int
    series: int
    push_kb: float
    shards: int = 1
    fill_seconds: float = 0.0
    fill_failed: int = 0
    steady: Pushes = field(default_factory=Pushes)
    burst: Pushes = field(default_factory=Pushes)
    rss_empty_mb: float = 0.0
    rss_filled_mb: float = 0.0
    rss_peak_mb: float = 0.0
    cores: list[float] = field(default_factory=list)  # steady, burst
    scrape_steady: Scrapes = field(default_factory=Scrapes)
    scrape_burst: Scrapes = field(default_factory=Scrapes)
    scrape_samples: float | None = None
    shard_scrapes: list[ShardScrapes] = field(default_factory=list)
    series_stored: tuple[int, int] | None = None  # per probe in Prometheus: (min, max)
    probes_in_prometheus: int = 0  # probes with all `series` series in Prometheus

    @property
    def scrapes_ok(self) -> bool:
        """Issue 13's target: every scrape of every shard <= 5 s, none failed."""
        durations = [s.max for s in self.shard_scrapes]
        return (
            bool(durations)
            and all(d is not None and d <= TARGET_SCRAPE_S for d in durations)
            and not self.scrape_steady.failed
            and not self.scrape_burst.failed
        )

    @property
    def mb_per_group(self) -> float:
        # rss_empty_mb is one empty gateway's; every shard starts at that
        return (self.rss_filled_mb - self.shards * self.rss_empty_mb) / max(1, self.probes)


def _value(prom: Prometheus, promql: str, at: float | None = None) -> float | None:
    with contextlib.suppress(Exception):
        result = prom.query(promql, at=at)
        return float(result[0]["value"][1]) if len(result) == 1 else None
    return None


def _per_instance(prom: Prometheus, promql: str, at: float) -> dict[str, float]:
    with contextlib.suppress(Exception):
        return {r["metric"]["instance"]: float(r["value"][1]) for r in prom.query(promql, at=at)}
    return {}


def scrapes_between(prom: Prometheus, start: float, end: float) -> Scrapes:
    """The slowest scrape of any shard and the failed scrapes of all shards."""
    window = f"{max(1, int(end - start))}s"
    return Scrapes(
        _value(prom, f"max(max_over_time(scrape_duration_seconds{{{_JOB}}}[{window}]))", at=end),
        _value(
            prom,
            f"sum(count_over_time(up{{{_JOB}}}[{window}]) - sum_over_time(up{{{_JOB}}}[{window}]))",
            at=end,
        ),
    )


def shard_scrapes(prom: Prometheus, start: float, end: float) -> list[ShardScrapes]:
    window = f"{max(1, int(end - start))}s"
    duration = f"scrape_duration_seconds{{{_JOB}}}[{window}]"
    p50 = _per_instance(prom, f"quantile_over_time(0.5, {duration})", end)
    p99 = _per_instance(prom, f"quantile_over_time(0.99, {duration})", end)
    top = _per_instance(prom, f"max_over_time({duration})", end)
    samples = _per_instance(prom, f"max_over_time(scrape_samples_scraped{{{_JOB}}}[{window}])", end)
    return [
        ShardScrapes(i, p50.get(i), p99.get(i), top.get(i), samples.get(i)) for i in sorted(top)
    ]


def stored_series(
    prom: Prometheus, window: str, at: float, expected: int
) -> tuple[tuple[int, int] | None, int]:
    """Series per probe in Prometheus ((min, max) over the probes), and how many probes
    have all ``expected`` of them. Only the probe's families: the gateway adds
    push_time_seconds and push_failure_time_seconds to every group."""
    per_probe = (
        f'count by (namespace, probe) (last_over_time({{job="{JOB}", '
        f'__name__=~"traceroute_.*"}}[{window}]))'
    )
    low, high = _value(prom, f"min({per_probe})", at), _value(prom, f"max({per_probe})", at)
    complete = _value(prom, f"count({per_probe} == {expected})", at) or 0
    span = None if low is None or high is None else (int(low), int(high))
    return span, int(complete)


def measure(setup: Setup, probes: int, steady_seconds: float, burst_window: float) -> Row:
    template = setup.exposition()
    bodies = probe_bodies(template, probes)
    row = Row(setup.name, probes, series_count(template), len(template) / 1024, setup.shards)
    with (
        tempfile.TemporaryDirectory(prefix="trop-bench-scale-") as tmp,
        filled_gateways(setup, bodies, Path(tmp)) as filled,
        ProcessMeter(*(g.pid for g in filled.gateways)) as meter,
    ):
        row.fill_seconds, row.fill_failed = filled.seconds, filled.failed
        ports = filled.ports
        row.rss_filled_mb = meter.rss_mb()
        scrape = ScrapeTarget(
            "pushgateway",
            [f"{LOOPBACK}:{g.port}" for g in filled.gateways],
            honor_labels=True,
            extra={"scrape_timeout": SCRAPE_INTERVAL},
        )
        with Prometheus(scrape_targets=[scrape], interval=SCRAPE_INTERVAL) as prom:
            rate = probes / PERIOD_S
            count = max(1, int(rate * steady_seconds))
            time.sleep(2)  # Prometheus' first scrape
            steady_start = time.time()
            with meter.cores(row.cores):
                row.steady = paced(ports, bodies, [k % probes for k in range(count)], 1 / rate)
            burst_start = time.time()
            with meter.cores(row.cores):
                row.burst = paced(ports, bodies, range(probes), burst_window / probes)
            time.sleep(12)  # the scrape after the burst
            end = time.time()
            row.scrape_steady = scrapes_between(prom, steady_start, burst_start)
            row.scrape_burst = scrapes_between(prom, burst_start, end)
            window = f"{int(end - steady_start) + 1}s"
            row.shard_scrapes = shard_scrapes(prom, steady_start, end)
            row.scrape_samples = max(
                (s.samples for s in row.shard_scrapes if s.samples is not None), default=None
            )
            row.series_stored, row.probes_in_prometheus = stored_series(
                prom, window, end, row.series
            )
        row.rss_peak_mb = max(meter.peak_rss_mb, row.rss_filled_mb)
    return row


def empty_gateway_rss_mb() -> float:
    with Pushgateway(listen_host=LOOPBACK) as pgw:
        time.sleep(1)
        return ProcessMeter(pgw.pid).rss_mb()


# --- the table ---------------------------------------------------------------------------


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _pushes(p: Pushes) -> str:
    failed = f", {p.failed} failed" if p.failed else ""
    return f"{_s(p.quantile(0.5))} / {_s(p.quantile(0.99))} ({len(p.latencies)}{failed})"


def _stored(row: Row) -> str:
    if row.series_stored is None:
        return "-"
    low, high = row.series_stored
    return str(low) if low == high else f"{low}..{high}"


def table(rows: Sequence[Row]) -> str:
    columns: list[tuple[str, Callable[[Row], str]]] = [
        ("setup", lambda r: r.setup),
        ("shards", lambda r: str(r.shards)),
        ("probes", lambda r: str(r.probes)),
        ("series/probe", lambda r: str(r.series)),
        ("stored/probe", _stored),
        ("KB/push", lambda r: f"{r.push_kb:.1f}"),
        ("steady push p50/p99 (n)", lambda r: _pushes(r.steady)),
        ("burst push p50/p99 (n)", lambda r: _pushes(r.burst)),
        ("burst drained", lambda r: _s(r.burst.seconds)),
        ("RSS filled / peak", lambda r: f"{r.rss_filled_mb:.0f} / {r.rss_peak_mb:.0f} MB"),
        ("MB/group", lambda r: f"{r.mb_per_group:.3f}"),
        ("CPU steady / burst", lambda r: " / ".join(f"{c:.2f}" for c in r.cores) + " cores"),
        ("scrape max steady", lambda r: r.scrape_steady.text()),
        ("scrape max burst", lambda r: r.scrape_burst.text()),
        (
            "scrape p50 / p99 / max per shard",
            lambda r: "; ".join(s.text() for s in r.shard_scrapes),
        ),
        ("scrapes <= 5 s", lambda r: "yes" if r.scrapes_ok else "MISSED"),
        ("samples (max shard)", lambda r: f"{r.scrape_samples:.0f}" if r.scrape_samples else "-"),
        ("probes complete in Prometheus", lambda r: f"{r.probes_in_prometheus}/{r.probes}"),
    ]
    lines = [
        "| " + " | ".join(name for name, _ in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--setups", nargs="+", choices=sorted(SETUPS), default=["old", "new", "sharded"]
    )
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS, help="for `sharded`")
    parser.add_argument("--steady-seconds", type=float, default=40.0)
    parser.add_argument("--burst-window", type=float, default=5.0)
    parser.add_argument(
        "--quick", action="store_true", help="N=200, 15 s steady: a smoke run of a minute"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.probes, args.steady_seconds = [200], 15.0
    started = time.monotonic()
    empty = empty_gateway_rss_mb()
    setups = {**SETUPS, "sharded": dataclasses.replace(SETUPS["sharded"], shards=args.shards)}
    rows = []
    for probes in args.probes:
        for name in args.setups:
            row = measure(setups[name], probes, args.steady_seconds, args.burst_window)
            row.rss_empty_mb = empty
            rows.append(row)
            print(
                f"# {name} N={probes}: done after {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    print(table(rows))
    new = [r for r in rows if r.setup != "old"]
    if new:
        per_group = statistics.fmean(r.mb_per_group for r in new)
        print(
            f"\nempty Pushgateway RSS {empty:.0f} MB; new exposition "
            f"{per_group:.3f} MB per group (mean over N={[r.probes for r in new]})"
        )
    print(f"bench took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
