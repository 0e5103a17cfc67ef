"""Events on a probe: shape, length limit, and a failed post never raises."""

from __future__ import annotations

from traceroute_operator.events import EVENT_MESSAGE_LIMIT, EventRecorder
from traceroute_operator.metrics import OperatorMetrics
from traceroute_operator.ref import ProbeRef

from tests.operator.fakes import Clock, FakeKube, sample


def test_event_names_the_probe_and_fits_the_limit() -> None:
    kube = FakeKube()
    EventRecorder(kube, OperatorMetrics(), Clock(), "op-0").post(
        ProbeRef("net", "edge", "u"), "PathChanged", "x" * 2000
    )
    (event,) = kube.events
    assert event["involvedObject"] == {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "name": "edge",
        "namespace": "net",
        "uid": "u",
    }
    assert event["metadata"] == {"generateName": "edge.", "namespace": "net"}
    assert len(event["message"]) == EVENT_MESSAGE_LIMIT and event["message"].endswith("...")
    assert event["type"] == "Warning" and event["reportingInstance"] == "op-0"
    assert event["firstTimestamp"] == "2025-11-24T16:00:00Z"


def test_a_refused_event_is_counted_not_raised() -> None:
    kube = FakeKube()
    kube.fail("create", "events", 403, "forbidden")
    metrics = OperatorMetrics()
    EventRecorder(kube, metrics, Clock(), "op-0").post(ProbeRef("net", "edge"), "R", "m")
    assert sample(metrics, "traceroute_operator_errors_total", stage="event") == 1
