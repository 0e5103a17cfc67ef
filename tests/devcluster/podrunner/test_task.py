"""A pod task's pure parts and its stop signals; no root, no cluster."""

from __future__ import annotations

import threading
import time

from devcluster.podrunner.task import StopRequests, pod_binding


def test_binding_places_the_pod_on_the_runners_node() -> None:
    pod = {"metadata": {"name": "web-1", "namespace": "team", "uid": "u-1"}, "spec": {}}
    assert pod_binding(pod, "podrunner-abc") == {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "web-1", "uid": "u-1"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "podrunner-abc"},
    }


def test_waits_end_at_the_deadline() -> None:
    stops = StopRequests()
    assert stops.wait(time.monotonic() + 60, 0.01) is False  # slept, nothing to stop for
    assert stops.wait(time.monotonic() - 1, 60) is True  # deadline passed: no sleep
    assert stops.abort_reason is None and not stops.deleting


def test_abort_and_deletion_wake_a_waiting_task() -> None:
    for request in ("abort", "delete"):
        stops = StopRequests()
        if request == "abort":
            trigger = threading.Timer(0.05, stops.abort, args=("pod runner stopped",))
        else:
            trigger = threading.Timer(0.05, stops.delete_requested)
        trigger.start()
        began = time.monotonic()
        assert stops.wait(time.monotonic() + 60, 30) is True
        assert time.monotonic() - began < 10  # woken, not timed out
        trigger.join()
    assert stops.deleting and stops.abort_reason is None
