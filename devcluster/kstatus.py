"""kstatus of an object, computed by the real sigs.k8s.io/cli-utils library.

Flux's health checks and cli-utils appliers wait on kstatus; asking the library itself (the
Go helper devcluster/env/kstatus, built by devcluster/env/build-kstatus.sh) keeps the tests honest
about what those tools conclude from a TracerouteProbe's status.

    kstatus(kube.get(probe_path(ns, name))).status  # "InProgress", "Current", "Failed", ...
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.paths import ENV_SCRIPTS
from devcluster.runtime import CACHE

SOURCE = ENV_SCRIPTS / "kstatus"


def binary() -> Path:
    """The helper built from this checkout's sources (the key build-kstatus.sh uses)."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    path = CACHE / f"kstatus-{digest.hexdigest()[:16]}" / "kstatus"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `make env` (devcluster/env/build-kstatus.sh)")
    return path


@dataclass(frozen=True)
class KStatus:
    status: str  # InProgress, Failed, Current, Terminating, NotFound, Unknown
    message: str
    conditions: tuple[Mapping[str, Any], ...]

    def condition(self, type_: str) -> Mapping[str, Any] | None:
        return next((c for c in self.conditions if c.get("type") == type_), None)


def kstatus(obj: Mapping[str, Any]) -> KStatus:
    result = subprocess.run(
        [str(binary())],
        input=json.dumps(obj).encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kstatus helper failed: {result.stderr.decode(errors='replace')}")
    verdict = json.loads(result.stdout)
    return KStatus(
        status=verdict["status"],
        message=verdict["message"],
        conditions=tuple(verdict["conditions"]),
    )
