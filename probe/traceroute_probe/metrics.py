"""Metric families of a run and the PUT to the Pushgateway.

Series are bounded: per target, per TTL (1..hop count) and per flow; hop identity lives
in ``traceroute_hop_info`` and path edges in ``traceroute_edge_info`` so that numeric
series keep their label sets when an address changes. A PUT replaces the whole group
(``job/traceroute/namespace/<ns>/probe/<name>``), so hops that vanished vanish. The group
and the reserved label names are part of the operator contract (docs/contracts.md
section 4).
"""

from __future__ import annotations

import base64
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from . import contract
from .contract import GROUPING_LABELS, PUSHGATEWAY_JOB
from .result import RunResult, TargetResult, rtt_stats_ms

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
    "traceroute_hop_rtt_min_seconds": (("target", "flow", "ttl"), "Fastest answer at this hop."),
    "traceroute_hop_rtt_avg_seconds": (("target", "flow", "ttl"), "Mean answer time at this hop."),
    "traceroute_hop_rtt_max_seconds": (("target", "flow", "ttl"), "Slowest answer at this hop."),
    "traceroute_hop_rtt_stddev_seconds": (
        ("target", "flow", "ttl"),
        "Population standard deviation of the answer times at this hop.",
    ),
    "traceroute_hop_loss_ratio": (
        ("target", "flow", "ttl"),
        "Share of settled probes at this hop without an answer.",
    ),
    "traceroute_hop_probes_sent": (
        ("target", "flow", "ttl"),
        "Probes sent and settled (answered or timed out) at this hop.",
    ),
    "traceroute_hop_replies": (("target", "flow", "ttl"), "Answers received at this hop."),
    "traceroute_hop_rate_limited": (
        ("target", "ttl"),
        "1 if the hop lost probes while it and a later hop answered (ICMP rate limiting).",
    ),
    "traceroute_hop_info": (
        ("target", "flow", "ttl", "ip"),
        "1 for each address that answered at this hop and flow.",
    ),
    "traceroute_edge_info": (
        ("target", "from", "to"),
        'Path edges for a node graph: "origin", responder addresses, "*<ttl>" for silence.',
    ),
    "traceroute_target_error": (
        ("target", "kind"),
        "1 if the target could not be traced: resolve, permission, socket or internal.",
    ),
    # --- pacing and ECMP hop counts (kept apart: new families are appended) ---
    "traceroute_hops_min": (("target",), "Shortest hop count among the flows (unequal ECMP)."),
    "traceroute_hops_max": (("target",), "Longest hop count among the flows (= traceroute_hops)."),
    "traceroute_flows_served": (
        ("target",),
        "Flows measured at every TTL within the deadline under the routers' ICMP rate limits.",
    ),
    "traceroute_destination_probes_sent": (
        ("target",),
        "Dedicated end-to-end probes to the destination that settled (the loss ratio's base).",
    ),
}

METRIC_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)

# Still importable from here (the operator's spec and the CRD tests do): the contract's.
RESERVED_LABELS = contract.RESERVED_LABELS

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def validate_label_name(name: str) -> str | None:
    """Why ``name`` cannot be an extra label, or None if it can."""
    if not _LABEL_NAME.match(name) or name.startswith("__"):
        return f"invalid label name {name!r}"
    if name in RESERVED_LABELS:
        return f"label name {name!r} is reserved"
    return None


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
            put("traceroute_hop_rate_limited", 1.0 if hop.rate_limited else 0.0, name, ttl)
            for fh in hop.flows:
                flow = str(fh.flow)
                put("traceroute_hop_probes_sent", fh.sent, name, flow, ttl)
                put("traceroute_hop_replies", fh.replies, name, flow, ttl)
                put("traceroute_hop_loss_ratio", fh.loss_ratio, name, flow, ttl)
                stats = rtt_stats_ms(fh.rtts_ms)
                if stats is not None:
                    for suffix, value in zip(("min", "avg", "max", "stddev"), stats, strict=True):
                        put(f"traceroute_hop_rtt_{suffix}_seconds", value / 1000.0, name, flow, ttl)
                for ip in fh.responders:
                    put("traceroute_hop_info", 1, name, flow, ttl, ip)
        for a, b in sorted(_edges(t)):
            put("traceroute_edge_info", 1, name, a, b)
        _put_pacing(put, t)
    return registry


def _put_pacing(put: Callable[..., None], t: TargetResult) -> None:
    """The pacing and ECMP hop-count families of one target."""
    name = t.target
    put("traceroute_hops_min", t.hops_min, name)
    put("traceroute_hops_max", t.hops_max, name)
    if t.address is not None:
        put("traceroute_flows_served", t.flows_served, name)
    put("traceroute_destination_probes_sent", t.destination_sent, name)


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
    backoff: float = 0.5  # seconds, doubled after every failed attempt


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


def push(registry: CollectorRegistry, settings: PushSettings) -> None:
    """PUT the registry as the probe's group; retries with backoff, then PushError."""
    namespace_label, probe_label = GROUPING_LABELS
    grouping = {namespace_label: settings.namespace, probe_label: settings.probe}
    delay = settings.backoff
    last = "no attempt"
    # Built once (the SSL context reads the CA file), inside the try so that a failure
    # to build it is retried and reported like any other failed attempt.
    handler: Handler | None = None
    for attempt in range(max(1, settings.attempts)):
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
        except urllib.error.URLError as err:
            last = str(err.reason)
        except (OSError, PushError, ValueError) as err:
            last = str(err) or type(err).__name__
        if attempt + 1 < settings.attempts:
            time.sleep(delay)
            delay *= 2
    raise PushError(f"push to {settings.url} failed: {last}")
