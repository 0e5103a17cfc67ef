"""Status read-modify-write: conflicts re-read, a gone probe is None, a skip writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from traceroute_operator.errors import RetryableError
from traceroute_operator.metrics import OperatorMetrics
from traceroute_operator.ref import ProbeRef
from traceroute_operator.status_writer import STATUS_WRITE_ATTEMPTS, StatusWriter

from tests.operator.fakes import FakeKube, probe_body

EDGE = ProbeRef("net", "edge")


def count_writes(seen: list[Any]) -> Any:
    def mutate(current: dict[str, Any]) -> dict[str, Any]:
        seen.append(current["metadata"]["resourceVersion"])
        return {"n": len(seen)}

    return mutate


def test_a_conflict_rereads_and_redoes_the_change() -> None:
    kube = FakeKube()
    kube.put(probe_body())
    kube.conflicts_left = 1
    seen: list[Any] = []
    written = StatusWriter(kube, OperatorMetrics()).write(EDGE, count_writes(seen))
    assert written is not None and written["status"] == {"n": 2}
    assert len(set(seen)) == 2  # the second attempt started from the newer object


def test_too_many_conflicts_ask_for_a_retry() -> None:
    kube = FakeKube()
    kube.put(probe_body())
    kube.conflicts_left = STATUS_WRITE_ATTEMPTS
    with pytest.raises(RetryableError, match="too many conflicting writers"):
        StatusWriter(kube, OperatorMetrics()).write(EDGE, count_writes([]))


def test_gone_skipped_and_unchanged_write_nothing() -> None:
    kube = FakeKube()
    writer = StatusWriter(kube, OperatorMetrics())
    assert writer.write(EDGE, count_writes([])) is None  # no such probe
    kube.put({**probe_body(), "status": {"n": 1}})
    assert writer.write(EDGE, lambda current: None) is None
    assert writer.write(EDGE, lambda current: {"n": 1}) is not None
    assert kube.calls_of("replace_status") == []
