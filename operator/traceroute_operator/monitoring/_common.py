"""Small helpers shared by the monitoring builders."""

from __future__ import annotations

from ..naming import LABEL_MANAGED_BY, MANAGED_BY


def common_labels(component: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/part-of": "traceroute-operator",
        "app.kubernetes.io/component": component,
    }


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
