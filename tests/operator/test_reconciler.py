"""ProbeReconciler only wires the verbs: one probe's life through it against the fakes."""

from __future__ import annotations

from traceroute_operator.config import OperatorConfig
from traceroute_operator.reconciler import ProbeReconciler

from tests.operator.fakes import TS, Clock, FakeKube, finished, probe_body, recording_pushgateway


def test_reconcile_read_a_run_and_delete() -> None:
    kube = FakeKube()
    body = kube.put(probe_body())
    with recording_pushgateway() as pushgateway:
        operator = ProbeReconciler(
            kube, OperatorConfig(pushgateway_url=pushgateway.url), clock=Clock(TS + 5)
        )
        operator.reconcile(body)
        assert operator.managed_probes == 1
        assert kube.stored("cronjobs", "net", "trp-edge") is not None
        operator.handle_pod(finished("p1", TS))
        probe = kube.stored("tracerouteprobes", "net", "edge")
        assert probe is not None and probe["status"]["lastRun"]["podUID"] == "p1"
        kube.objects.pop(("tracerouteprobes", "net", "edge"))  # the apiserver lets it go
        operator.cleanup(probe)
        assert operator.managed_probes == 0
        assert kube.stored("cronjobs", "net", "trp-edge") is None
        methods = [m for m, _, _ in pushgateway.requests]
        assert methods == ["PUT", "DELETE", "DELETE"]  # verdict, then both groups
    assert not [k for k in kube.objects if k[0] in ("servicemonitors", "configmaps")]
