"""Metric families that exist: the probe's (its metrics module) and the operator's
(parsed from the exposition the operator really pushes)."""

from __future__ import annotations

import re
from typing import Any

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


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title or annotation/variable name, PromQL) for every query in a dashboard."""
    found: list[tuple[str, str]] = []
    for panel in dashboard.get("panels", []):
        # rows are flat (panels follow them at top level); a collapsed row would hide
        # its panels' queries from this list
        assert not panel.get("panels"), f"row {panel.get('title')} nests panels"
        for target in panel.get("targets") or []:
            if target.get("expr"):
                found.append((str(panel.get("title")), str(target["expr"])))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append((f"annotation {annotation.get('name')}", str(annotation["expr"])))
    return found
