"""Metric families that exist: the probe's (its metrics module) and the operator's
(parsed from the exposition the operator really pushes)."""

from __future__ import annotations

import re

from traceroute_operator.pushgateway import verdict_exposition
from traceroute_probe.metrics import METRIC_FAMILIES


def probe_families() -> frozenset[str]:
    """What the probe pushes, from its own metrics module."""
    return frozenset(METRIC_FAMILIES)


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
