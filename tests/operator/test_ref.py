"""ProbeRef: the probe's identity, read once from a body."""

from __future__ import annotations

import pytest
from traceroute_operator.ref import ProbeRef


def test_from_body_and_owner_reference() -> None:
    ref = ProbeRef.from_body({"metadata": {"name": "p", "namespace": "n", "uid": "u"}})
    assert ref == ProbeRef("n", "p", "u") and ref.key == ("n", "p")
    assert ref.owner_reference() == {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "name": "p",
        "uid": "u",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_no_uid_no_owner_reference() -> None:
    ref = ProbeRef.from_body({"metadata": {"name": "p", "namespace": "n", "uid": ""}})
    assert ref.uid is None and ref.owner_reference() is None


@pytest.mark.parametrize(
    ("metadata", "missing"),
    [({"namespace": "n"}, r"metadata\.name"), ({"name": "p"}, r"metadata\.namespace")],
)
def test_name_and_namespace_are_required(metadata: dict[str, str], missing: str) -> None:
    with pytest.raises(ValueError, match=missing):
        ProbeRef.from_body({"metadata": metadata})
