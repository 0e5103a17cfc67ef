"""Run the chart's Argo CD health check (Lua) the way Argo CD does.

Argo CD runs resource health scripts with gopher-lua (Lua 5.1 semantics), the resource
as the global `obj`, and reads `status` and `message` of the returned table. lupa's
Lua 5.1 runtime does the same here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lupa import lua51

from devcluster.chart import ARGOCD_HEALTH

ARGO_HEALTH_STATUSES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def argocd_health(resource: dict[str, Any]) -> Health:
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    # Argo CD's sandbox: no os/io; the script must not need them
    runtime.execute("os = nil; io = nil")
    runtime.globals().obj = _to_lua(runtime, resource)
    script = ARGOCD_HEALTH.read_text()
    result = runtime.execute(script)
    status, message = result["status"], result["message"]
    assert status in ARGO_HEALTH_STATUSES, status
    return Health(str(status), str(message or ""))
