"""Small helpers shared by the monitoring builders."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

MANAGED_BY = "traceroute-operator"
PROBE_API_VERSION = "traceroute.dev/v1alpha1"
PROBE_KIND = "TracerouteProbe"
PROBE_LABEL = "traceroute.dev/probe"

# Job names of the two Pushgateway groups (contracts: probe and operator).
PROBE_JOB = "traceroute"
OPERATOR_JOB = "traceroute-operator"


def common_labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "traceroute-operator",
        "app.kubernetes.io/component": component,
    }


def bounded_name(prefix: str, name: str, limit: int = 253) -> str:
    """``prefix + name``, shortened with a stable hash when it would exceed ``limit``."""
    full = prefix + name
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{full[: limit - 11].rstrip('-.')}-{digest}"


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration (``1h30m``, ``90s`` -> ``1m30s``), at least 1s."""
    total = max(1, round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def get_path(obj: Mapping[str, Any], *keys: str) -> Any:
    """obj[k1][k2]... or None when any level is missing or not a mapping."""
    current: Any = obj
    for key in keys:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current
