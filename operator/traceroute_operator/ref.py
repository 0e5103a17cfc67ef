"""Which TracerouteProbe a thing belongs to: namespace, name and uid, read once per body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .naming import API_VERSION, KIND


@dataclass(frozen=True)
class ProbeRef:
    namespace: str
    name: str
    uid: str | None = None  # None: never reached the apiserver (offline render)

    @classmethod
    def from_body(cls, probe: Mapping[str, Any]) -> ProbeRef:
        """The reference of a TracerouteProbe body; ValueError without name or namespace."""
        meta = probe.get("metadata") or {}
        name = meta.get("name")
        namespace = meta.get("namespace")
        if not isinstance(name, str) or not name:
            raise ValueError("TracerouteProbe without metadata.name")
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"TracerouteProbe {name} without metadata.namespace")
        uid = meta.get("uid")
        return cls(namespace, name, uid if isinstance(uid, str) and uid else None)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def owner_reference(self) -> dict[str, Any] | None:
        """Owner reference to the probe (None without a uid: the apiserver assigns it)."""
        if self.uid is None:
            return None
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
