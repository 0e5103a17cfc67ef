"""Where the project's sources live, for the tools that read or install them."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "traceroute-operator"
CRD_SOURCE = ROOT / "crds" / "tracerouteprobes.yaml"
RBAC_SOURCE = ROOT / "operator" / "traceroute_operator" / "data" / "rbac.yaml"
ENV_SCRIPTS = ROOT / "devcluster" / "env"
