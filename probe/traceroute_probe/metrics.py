"""Metric families of a run and the PUT to the Pushgateway.

Series are bounded per target and TTL (1..hop count): the numeric per-hop statistics are
pooled across the Paris flows, so a probe's series do not multiply with ``--flows``.
Which flow met which address lives only in the info series: ``traceroute_hop_info``
(one per TTL and address, its ``flows`` label listing the flows) and
``traceroute_edge_info`` (path edges). Numeric series thus keep their label sets when an
address changes. Sent/replies (derivable from the loss ratio and the probe's settings),
the RTT standard deviation and the worst RTT are not exported; the per-flow detail is in
the probe's JSON output. A 15-hop, 3-flow run with ECMP on three TTLs is under 100
series (tests/probe/test_outputs.py). A PUT replaces the whole group
(``job/traceroute/namespace/<ns>/probe/<name>``), so hops that vanished vanish. The group
and the reserved label names are part of the operator contract (docs/contracts.md
section 4).
"""

from __future__ import annotations

import base64
import email.utils
import random
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from . import contract
from .contract import GROUPING_LABELS, PUSHGATEWAY_JOB
from .result import Hop, RunResult, TargetResult, rtt_stats_ms, sort_addresses

JOB = PUSHGATEWAY_JOB

# name -> (labels besides the --label ones, help)
_FAMILIES: dict[str, tuple[tuple[str, ...], str]] = {
    "traceroute_run_timestamp_seconds": ((), "Unix time the run started."),
    "traceroute_run_duration_seconds": ((), "Wall time of the whole run."),
    "traceroute_reached": (("target",), "1 if the destination answered, else 0."),
    "traceroute_hops": (
        ("target",),
        "Hop count: the longest flow's destination TTL when reached, else highest TTL "
        "with a responder.",
    ),
    "traceroute_expected_hops": (("target",), "Expected hop count configured for the target."),
    "traceroute_destination_loss_ratio": (
        ("target",),
        "Share of the dedicated end-to-end probes the destination did not answer "
        "(1 when not reached).",
    ),
    "traceroute_destination_rtt_seconds": (
        ("target",),
        "Mean round-trip time of the destination's answers.",
    ),
    "traceroute_duration_seconds": (("target",), "Time from run start until the target settled."),
    "traceroute_path_fingerprint": (
        ("target",),
        "CRC32 of reachability, hop count and the per-TTL responder sets (changes with the path).",
    ),
    "traceroute_hop_loss_ratio": (
        ("target", "ttl"),
        "Share of settled probes at this TTL (all flows) without an answer.",
    ),
    "traceroute_hop_rtt_min_seconds": (("target", "ttl"), "Fastest answer at this TTL."),
    "traceroute_hop_rtt_avg_seconds": (("target", "ttl"), "Mean answer time at this TTL."),
    "traceroute_hop_rate_limited": (
        ("target", "ttl"),
        "1 if the hop lost probes while it and a later hop answered (ICMP rate limiting);"
        " absent otherwise.",
    ),
    "traceroute_hop_info": (
        ("target", "ttl", "ip", "flows"),
        "1 for each address that answered at this TTL; flows lists the flows it answered.",
    ),
    "traceroute_edge_info": (
        ("target", "from", "to"),
        'Path edges for a node graph: "origin", responder addresses, "*<ttl>" for silence.',
    ),
    "traceroute_replies_rejected": (
        ("target", "kind"),
        "Replies naming the target that failed a check, by kind: checksum, destination, "
        "protocol, flow, token, sequence. Never an answer; absent when none.",
    ),
    "traceroute_target_error": (
        ("target", "kind"),
        "1 if the target could not be traced: resolve, permission, socket or internal.",
    ),
    # --- pacing and ECMP hop counts (kept apart: new families are appended) ---
    "traceroute_hops_min": (("target",), "Shortest hop count among the flows (unequal ECMP)."),
    "traceroute_flows_served": (
        ("target",),
        "Flows measured at every TTL within the deadline under the routers' ICMP rate limits.",
    ),
}

METRIC_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)

# Still importable from here (the operator's spec and the CRD tests do): the contract's.
RESERVED_LABELS = contract.RESERVED_LABELS
validate_label_name = contract.validate_label_name


def _edges(target: TargetResult) -> set[tuple[str, str]]:
    edges: set[tuple[str, str]] = set()
    if not target.hops:
        return edges
    for flow in range(len(target.hops[0].flows)):
        previous = "origin"
        for hop in target.hops:
            node = hop.flows[flow].main_responder or f"*{hop.ttl}"
            edges.add((previous, node))
            previous = node
    return edges


def _flows_by_address(hop: Hop) -> dict[str, str]:
    """Each responder at this TTL -> the flows it answered, as "0,2" (numeric order)."""
    flows: dict[str, list[int]] = {}
    for fh in hop.flows:
        for ip in fh.responders:
            flows.setdefault(ip, []).append(fh.flow)
    return {ip: ",".join(str(f) for f in sorted(flows[ip])) for ip in sort_addresses(flows)}


def build_registry(run: RunResult, extra_labels: Mapping[str, str]) -> CollectorRegistry:
    registry = CollectorRegistry()
    extra_names = tuple(extra_labels)
    extra_values = tuple(extra_labels.values())
    gauges = {
        name: Gauge(name, help_text, (*labels, *extra_names), registry=registry)
        for name, (labels, help_text) in _FAMILIES.items()
    }

    def put(name: str, value: float, *labels: str) -> None:
        gauge = gauges[name]
        if labels or extra_values:
            gauge.labels(*labels, *extra_values).set(value)
        else:
            gauge.set(value)

    put("traceroute_run_timestamp_seconds", run.started)
    put("traceroute_run_duration_seconds", run.duration_seconds)
    for t in run.targets:
        name = t.target
        if t.error is not None:
            put("traceroute_target_error", 1, name, t.error.kind)
        for reason, count in t.rejected_replies.items():
            put("traceroute_replies_rejected", count, name, reason)
        put("traceroute_reached", 1.0 if t.reached else 0.0, name)
        put("traceroute_hops", t.hop_count, name)
        if t.expected_hops is not None:
            put("traceroute_expected_hops", t.expected_hops, name)
        put("traceroute_destination_loss_ratio", t.destination_loss_ratio, name)
        if t.destination_rtt_ms is not None:
            put("traceroute_destination_rtt_seconds", t.destination_rtt_ms / 1000.0, name)
        put("traceroute_duration_seconds", t.duration_seconds, name)
        put("traceroute_path_fingerprint", float(t.path_fingerprint), name)
        for hop in t.hops:
            ttl = str(hop.ttl)
            if hop.rate_limited:
                put("traceroute_hop_rate_limited", 1, name, ttl)
            put("traceroute_hop_loss_ratio", hop.loss_ratio, name, ttl)
            stats = rtt_stats_ms(hop.rtts_ms())
            if stats is not None:
                put("traceroute_hop_rtt_min_seconds", stats[0] / 1000.0, name, ttl)
                put("traceroute_hop_rtt_avg_seconds", stats[1] / 1000.0, name, ttl)
            for ip, flows in _flows_by_address(hop).items():
                put("traceroute_hop_info", 1, name, ttl, ip, flows)
        for a, b in sorted(_edges(t)):
            put("traceroute_edge_info", 1, name, a, b)
        _put_pacing(put, t)
    return registry


def _put_pacing(put: Callable[..., None], t: TargetResult) -> None:
    """The pacing and ECMP hop-count families of one target. The longest flow's hop count is
    traceroute_hops, and the end-to-end probes sent follow from the settings: neither is a
    series of its own (issue 13's budget of 100 series per probe)."""
    name = t.target
    put("traceroute_hops_min", t.hops_min, name)
    if t.address is not None:
        put("traceroute_flows_served", t.flows_served, name)


class PushError(Exception):
    pass


@dataclass(frozen=True)
class PushSettings:
    url: str
    namespace: str
    probe: str
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 5.0
    attempts: int = 4
    # Full jitter: before retry k (1, 2, ...) wait uniform(0, min(backoff_cap, backoff * 2**k))
    # seconds, so probes that failed together do not come back together.
    backoff: float = 0.5
    backoff_cap: float = 8.0
    # An overloaded gateway's Retry-After (429/503) is waited for up to this long; a longer
    # one ends the retries (the Job's deadline leaves time for 3 such waits).
    retry_after_cap: float = 20.0


Handler = Callable[[str, str, float | None, list[tuple[str, str]], bytes], Callable[[], None]]


def _handler(settings: PushSettings) -> Handler:
    context: ssl.SSLContext | None = None
    if settings.url.startswith("https://") or settings.ca_file:
        context = ssl.create_default_context(cafile=settings.ca_file)

    def handler(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        def send() -> None:
            request = urllib.request.Request(url, data=data, method=method)
            for key, value in headers:
                request.add_header(key, value)
            if settings.username is not None:
                token = f"{settings.username}:{settings.password or ''}".encode()
                request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                if response.status >= 400:
                    raise PushError(f"HTTP {response.status}")

        return send

    return handler


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds an HTTP Retry-After header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def retry_wait(settings: PushSettings, retry: int, retry_after: float | None, rand: float) -> float:
    """Seconds to wait before retry ``retry`` (1-based); ``rand`` is uniform in [0, 1)."""
    jittered = rand * min(settings.backoff_cap, settings.backoff * 2.0**retry)
    if retry_after is None:
        return jittered
    # the gateway said when it can take us; a little jitter keeps us from all coming at once
    return retry_after + rand * settings.backoff


def push(
    registry: CollectorRegistry,
    settings: PushSettings,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> None:
    """PUT the registry as the probe's group; bounded retries with full jitter, then PushError.

    A 4xx other than 408/429 is not retried (the request is wrong); a 429/503 with
    Retry-After waits as long as the gateway asks (or gives up when that is beyond
    ``retry_after_cap``), so an overloaded gateway gets fewer requests, not more.
    """
    namespace_label, probe_label = GROUPING_LABELS
    grouping = {namespace_label: settings.namespace, probe_label: settings.probe}
    last = "no attempt"
    # Built once (the SSL context reads the CA file), inside the try so that a failure
    # to build it is retried and reported like any other failed attempt.
    handler: Handler | None = None
    attempts = max(1, settings.attempts)
    for attempt in range(attempts):
        retry_after: float | None = None
        try:
            if handler is None:
                handler = _handler(settings)
            push_to_gateway(
                settings.url,
                job=JOB,
                registry=registry,
                grouping_key=grouping,
                timeout=settings.timeout,
                handler=handler,
            )
            return
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code} {err.reason}"
            if 400 <= err.code < 500 and err.code not in (408, 429):
                break  # our request is wrong (auth, payload): retrying will not help
            if err.code in (429, 503):
                retry_after = retry_after_seconds(err.headers.get("Retry-After"), time.time())
                if retry_after is not None and retry_after > settings.retry_after_cap:
                    last += f" (Retry-After {retry_after:.0f} s: later than this run can wait)"
                    break
        except urllib.error.URLError as err:
            last = str(err.reason)
        except (OSError, PushError, ValueError) as err:
            last = str(err) or type(err).__name__
        if attempt + 1 < attempts:
            sleep(retry_wait(settings, attempt + 1, retry_after, rand()))
    raise PushError(f"push to {settings.url} failed: {last}")
