"""uninstall / release (uninstall.py) against the fakes: nothing is left behind, and
nothing waits for ever."""

from __future__ import annotations

from typing import Any

from traceroute_operator.config import OperatorConfig
from traceroute_operator.naming import FINALIZER
from traceroute_operator.reconciler import ProbeReconciler
from traceroute_operator.ref import ProbeRef
from traceroute_operator.uninstall import release, uninstall

from tests.operator.fakes import Clock, FakeKube, probe_body, recording_pushgateway


def finalized(name: str, namespace: str = "net") -> dict[str, Any]:
    body = probe_body(name=name, namespace=namespace, uid=f"uid-{name}")
    body["metadata"]["finalizers"] = [FINALIZER]
    return body


def test_uninstall_deletes_the_served_probes_and_waits_for_the_operator() -> None:
    kube = FakeKube()
    for name in ("a", "b"):
        kube.put(finalized(name))
    kube.put(finalized("other", namespace="elsewhere"))
    waited: list[float] = []

    def operator_cleans_up(seconds: float) -> None:
        # the running operator handles the deletions meanwhile
        waited.append(seconds)
        for name in ("a", "b"):
            kube.objects.pop(("tracerouteprobes", "net", name), None)

    clock = Clock(0.0)
    assert uninstall(kube, ["net"], 60, clock=clock, sleep=operator_cleans_up) == []
    assert waited == [2.0]
    assert kube.stored("tracerouteprobes", "elsewhere", "other") is not None  # not served


def test_uninstall_without_an_operator_gives_up_in_time_naming_the_probes() -> None:
    kube = FakeKube()
    kube.put(finalized("stuck"))
    clock = Clock(0.0)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    remaining = uninstall(kube, [], 10, clock=clock, sleep=sleep)
    assert remaining == [ProbeRef("net", "stuck", "uid-stuck")]
    assert clock.now == 10.0
    probe = kube.stored("tracerouteprobes", "net", "stuck")
    assert probe is not None and probe["metadata"]["deletionTimestamp"]


def test_release_cleans_up_without_an_operator_and_removes_the_finalizer() -> None:
    kube = FakeKube()
    with recording_pushgateway() as pushgateway:
        reconciler = ProbeReconciler(kube, OperatorConfig(pushgateway_url=pushgateway.url))
        for name in ("a", "b"):
            reconciler.reconcile(kube.put(finalized(name)))
        assert kube.stored("cronjobs", "net", "trp-a") is not None
        released = release(reconciler, "net")
        deletes = [path for method, path, _ in pushgateway.requests if method == "DELETE"]
    assert sorted(r.name for r in released) == ["a", "b"]
    assert kube.stored("tracerouteprobes", "net", "a") is None
    assert kube.stored("cronjobs", "net", "trp-a") is None
    assert len(deletes) == 4  # both groups of both probes
    assert not [k for k in kube.objects if k[0] in ("servicemonitors", "configmaps")]


def test_release_with_an_unreachable_pushgateway_still_releases() -> None:
    kube = FakeKube()
    reconciler = ProbeReconciler(kube, OperatorConfig(pushgateway_url="http://127.0.0.1:9"))
    kube.put(finalized("a"))
    assert [r.name for r in release(reconciler, "net")] == ["a"]
    assert kube.stored("tracerouteprobes", "net", "a") is None
    assert [e["reason"] for e in kube.events] == ["PushgatewayCleanupFailed"]
