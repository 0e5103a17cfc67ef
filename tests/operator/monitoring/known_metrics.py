"""Metric families that exist: the probe's (its metrics module) and the operator's
(parsed from the exposition the operator really pushes)."""

from __future__ import annotations

import importlib
import re

from traceroute_operator.pushgateway import verdict_exposition

# contracts.md section 4, used only until traceroute_probe.metrics exists
_CONTRACT_PROBE_FAMILIES = frozenset(
    {
        "traceroute_run_timestamp_seconds",
        "traceroute_run_duration_seconds",
        "traceroute_reached",
        "traceroute_hops",
        "traceroute_expected_hops",
        "traceroute_destination_loss_ratio",
        "traceroute_destination_rtt_seconds",
        "traceroute_duration_seconds",
        "traceroute_path_fingerprint",
        "traceroute_hop_rtt_min_seconds",
        "traceroute_hop_rtt_avg_seconds",
        "traceroute_hop_rtt_max_seconds",
        "traceroute_hop_rtt_stddev_seconds",
        "traceroute_hop_loss_ratio",
        "traceroute_hop_probes_sent",
        "traceroute_hop_replies",
        "traceroute_hop_rate_limited",
        "traceroute_hop_info",
        "traceroute_edge_info",
        "traceroute_target_error",
    }
)


def probe_families() -> tuple[frozenset[str], str]:
    """(families, where they came from)."""
    try:
        metrics = importlib.import_module("traceroute_probe.metrics")
    except ImportError:
        return _CONTRACT_PROBE_FAMILIES, "contracts.md (traceroute_probe.metrics not there yet)"
    return frozenset(metrics.METRIC_FAMILIES), "traceroute_probe.metrics.METRIC_FAMILIES"


def operator_families() -> frozenset[str]:
    text = verdict_exposition(
        [{"name": "t", "pathChanges": 1, "lastChangeTime": "2025-01-01T00:00:00Z"}], {}
    )
    return frozenset(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


# Names inside a PromQL expression that are no metric: functions, keywords.
_PROMQL_WORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
    ]
)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: every `name{` plus any bare traceroute_* token."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    braced = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", without_strings))
    bare = set(re.findall(r"\btraceroute_[a-zA-Z0-9_]+\b", without_strings))
    return (braced | bare) - _PROMQL_WORDS
