"""The probe's exposition before issue 13 (per-flow per-hop families), kept only as the
scale benchmark's baseline: "old" in its table pushes this, "new" the probe's own.

Same families and label sets as traceroute_probe.metrics had then: seven numeric series
per flow and TTL, hop_info per flow, rate_limited on every TTL. 407 series for the
synthetic run (devcluster.bench.synthetic).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest
from traceroute_probe.metrics import build_registry
from traceroute_probe.result import RunResult, rtt_stats_ms

_PER_FLOW = (
    "traceroute_hop_rtt_min_seconds",
    "traceroute_hop_rtt_avg_seconds",
    "traceroute_hop_rtt_max_seconds",
    "traceroute_hop_rtt_stddev_seconds",
    "traceroute_hop_loss_ratio",
    "traceroute_hop_probes_sent",
    "traceroute_hop_replies",
)
# families the pre-issue-13 probe did not have at all
_NEWER = {"traceroute_hops_min", "traceroute_flows_served", "traceroute_replies_rejected"}
_PER_HOP = {
    "traceroute_hop_rtt_min_seconds",
    "traceroute_hop_rtt_avg_seconds",
    "traceroute_hop_loss_ratio",
    "traceroute_hop_rate_limited",
    "traceroute_hop_info",
}


def legacy_exposition(run: RunResult) -> str:
    """Text exposition of ``run`` as the pre-issue-13 probe pushed it."""
    registry = CollectorRegistry()
    # the per-target families are unchanged: take them from today's builder
    for family in build_registry(run, {}).collect():
        if family.name in _PER_HOP or family.name in _NEWER or not family.samples:
            continue  # (a Gauge never set would still export a 0)
        names = tuple(family.samples[0].labels)
        gauge = Gauge(family.name, family.documentation, names, registry=registry)
        for sample in family.samples:
            if names:
                gauge.labels(*sample.labels.values()).set(sample.value)
            else:
                gauge.set(sample.value)
    gauges = {
        name: Gauge(name, name, ("target", "flow", "ttl"), registry=registry) for name in _PER_FLOW
    }
    limited = Gauge("traceroute_hop_rate_limited", "", ("target", "ttl"), registry=registry)
    info = Gauge("traceroute_hop_info", "", ("target", "flow", "ttl", "ip"), registry=registry)
    for target in run.targets:
        for hop in target.hops:
            ttl = str(hop.ttl)
            limited.labels(target.target, ttl).set(1.0 if hop.rate_limited else 0.0)
            for fh in hop.flows:
                labels = (target.target, str(fh.flow), ttl)
                values = {
                    "traceroute_hop_probes_sent": float(fh.sent),
                    "traceroute_hop_replies": float(fh.replies),
                    "traceroute_hop_loss_ratio": fh.loss_ratio,
                }
                stats = rtt_stats_ms(fh.rtts_ms)
                if stats is not None:
                    for suffix, value in zip(("min", "avg", "max", "stddev"), stats, strict=True):
                        values[f"traceroute_hop_rtt_{suffix}_seconds"] = value / 1000.0
                for name, value in values.items():
                    gauges[name].labels(*labels).set(value)
                for ip in fh.responders:
                    info.labels(*labels, ip).set(1)
    return generate_latest(registry).decode()
