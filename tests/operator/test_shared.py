"""The shared monitoring objects (shared.SharedMonitoring): applied once per period, refcounted."""

from __future__ import annotations

from traceroute_operator.config import OperatorConfig
from traceroute_operator.context import OperatorContext
from traceroute_operator.metrics import OperatorMetrics
from traceroute_operator.ref import ProbeRef
from traceroute_operator.shared import SharedMonitoring

from tests.operator.fakes import Clock, FakeKube, probe_body, sample

CONFIG = OperatorConfig(resync_seconds=600)
EDGE = ProbeRef("net", "edge", "uid-edge")


def shared(kube: FakeKube, clock: Clock, config: OperatorConfig = CONFIG) -> SharedMonitoring:
    return SharedMonitoring(OperatorContext.create(kube, config, OperatorMetrics(), clock))


def shared_keys(kube: FakeKube) -> set[tuple[str, str | None, str]]:
    return {k for k in kube.objects if k[0] in ("servicemonitors", "configmaps")}


def test_applied_once_per_resync_period() -> None:
    kube, clock = FakeKube(), Clock()
    objects = shared(kube, clock)
    assert objects.ensure() == (True, "")
    applied = len(kube.calls_of("apply"))
    assert applied >= 3  # the ServiceMonitor and at least two dashboards
    clock.now += 599
    objects.ensure()
    assert len(kube.calls_of("apply")) == applied
    clock.now += 1
    objects.ensure()
    assert len(kube.calls_of("apply")) == 2 * applied


def test_a_failure_is_remembered_for_the_period_with_its_message() -> None:
    kube, clock = FakeKube(), Clock()
    kube.fail("apply", "servicemonitors", 403, "forbidden")
    objects = shared(kube, clock)
    ok, message = objects.ensure()
    assert (
        not ok and message == "ServiceMonitor traceroute-system/traceroute-pushgateway: forbidden"
    )
    assert objects.ensure() == (ok, message)
    assert sample(objects.ctx.metrics, "traceroute_operator_errors_total", stage="monitoring") == 1


def test_released_only_with_the_last_probe() -> None:
    kube, clock = FakeKube(), Clock()
    objects = shared(kube, clock)
    objects.ensure()
    kube.put(probe_body("edge"))
    kube.put(probe_body("core", uid="uid-core"))
    before = shared_keys(kube)
    objects.release_if_unused(EDGE)
    assert shared_keys(kube) == before  # "core" still needs them
    deleting = probe_body("core", uid="uid-core")
    deleting["metadata"]["deletionTimestamp"] = "2025-11-24T16:00:00Z"
    kube.put(deleting)
    objects.release_if_unused(EDGE)
    assert shared_keys(kube) == set()
    # released: the next probe's reconcile applies them again at once
    objects.ensure()
    assert shared_keys(kube) == before


def test_watched_namespaces_are_listed_one_by_one() -> None:
    kube = FakeKube()
    objects = shared(kube, Clock(), OperatorConfig(watch_namespaces=("a", "b")))
    objects.release_if_unused(EDGE)
    assert [ns for _, ns, _ in kube.calls_of("list")] == ["a", "b"]


def test_a_missing_kind_on_release_is_no_error() -> None:
    kube = FakeKube()
    kube.fail("delete", "servicemonitors", 404, "the server could not find the requested resource")
    objects = shared(kube, Clock())
    objects.release_if_unused(EDGE)
    assert sample(objects.ctx.metrics, "traceroute_operator_errors_total", stage="monitoring") == 0
