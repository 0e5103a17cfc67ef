"""TracerouteProbe bodies parsed the way the operator parses them at its edge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from traceroute_operator.ref import ProbeRef
from traceroute_operator.spec import ProbeSpec


def parsed(body: Mapping[str, Any]) -> tuple[ProbeRef, ProbeSpec]:
    """(ref, spec) of a body; SpecError/ValueError as the operator would see them."""
    return ProbeRef.from_body(body), ProbeSpec.from_dict(body.get("spec"))
