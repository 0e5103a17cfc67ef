"""Drift (drift.CronJobDrift): a CronJob deleted or edited by someone else comes back."""

from __future__ import annotations

import copy
from typing import Any

from traceroute_operator.apply import ChildApplier
from traceroute_operator.config import OperatorConfig
from traceroute_operator.context import OperatorContext
from traceroute_operator.drift import CronJobDrift, contains
from traceroute_operator.metrics import OperatorMetrics
from traceroute_operator.ref import ProbeRef
from traceroute_operator.shared import SharedMonitoring

from tests.operator.fakes import Clock, FakeKube, probe_body, sample

CONFIG = OperatorConfig(probe_image="registry.example/probe:1")


def drift_verb(kube: FakeKube) -> CronJobDrift:
    ctx = OperatorContext.create(kube, CONFIG, OperatorMetrics(), Clock())
    return CronJobDrift(ctx, ChildApplier(ctx, SharedMonitoring(ctx)))


def test_contains_allows_defaulted_fields_but_not_changed_ones() -> None:
    desired: dict[str, Any] = {
        "schedule": "*/5 * * * *",
        "jobTemplate": {"containers": [{"name": "probe"}]},
    }
    defaulted = copy.deepcopy(desired)
    defaulted["jobTemplate"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    defaulted["successfulJobsHistoryLimit"] = 3
    assert contains(desired, defaulted)
    edited = copy.deepcopy(defaulted)
    edited["schedule"] = "0 * * * *"
    assert not contains(desired, edited)
    extra_container = copy.deepcopy(defaulted)
    extra_container["jobTemplate"]["containers"].append({"name": "sidecar"})
    assert not contains(desired, extra_container)


def test_a_deleted_cronjob_is_applied_again() -> None:
    kube = FakeKube()
    verb = drift_verb(kube)
    verb.children.reconcile(kube.put(probe_body()))
    cronjob = kube.objects.pop(("cronjobs", "net", "trp-edge"))
    assert verb.handle_cronjob("DELETED", cronjob)
    assert kube.stored("cronjobs", "net", "trp-edge") is not None
    assert sample(verb.ctx.metrics, "traceroute_operator_cronjob_restores_total", change="deleted")


def test_an_edited_schedule_is_restored_and_own_writes_are_ignored() -> None:
    kube = FakeKube()
    verb = drift_verb(kube)
    verb.children.reconcile(kube.put(probe_body()))
    ours = kube.stored("cronjobs", "net", "trp-edge")
    assert ours is not None
    applies = len(kube.calls_of("apply"))
    # the operator's own apply and the CronJob controller's status write: nothing to do
    assert not verb.handle_cronjob("MODIFIED", ours)
    assert not verb.handle_cronjob("MODIFIED", {**ours, "status": {"lastScheduleTime": "x"}})
    assert len(kube.calls_of("apply")) == applies
    edited = kube.put({**ours, "spec": {**ours["spec"], "schedule": "0 3 * * *"}})
    assert verb.handle_cronjob("MODIFIED", edited)
    restored = kube.stored("cronjobs", "net", "trp-edge")
    assert restored is not None and restored["spec"]["schedule"] == ours["spec"]["schedule"]
    assert ours["spec"]["schedule"] != "0 3 * * *"


def test_the_cronjob_of_a_deleting_or_cleaned_up_probe_stays_deleted() -> None:
    kube = FakeKube()
    verb = drift_verb(kube)
    body = kube.put(probe_body())
    verb.children.reconcile(body)
    cronjob = kube.objects.pop(("cronjobs", "net", "trp-edge"))
    deleting = kube.stored("tracerouteprobes", "net", "edge")
    assert deleting is not None
    deleting["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert not verb.handle_cronjob("DELETED", cronjob)
    verb.ctx.cronjobs.forget(ProbeRef("net", "edge"))
    del deleting["metadata"]["deletionTimestamp"]
    assert not verb.handle_cronjob("DELETED", cronjob)  # cleaned up: no entry any more
    assert kube.stored("cronjobs", "net", "trp-edge") is None


def test_a_cronjob_this_process_never_applied_is_left_to_the_reconcile() -> None:
    kube = FakeKube()
    verb = drift_verb(kube)
    kube.put(probe_body())
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": "trp-edge",
            "namespace": "net",
            "labels": {"traceroute.dev/probe": "edge"},
        },
        "spec": {"schedule": "1 1 * * *"},
    }
    assert not verb.handle_cronjob("MODIFIED", foreign)
    assert kube.calls_of("get") == []
