"""Deleting a probe (cleanup.Cleanup): Pushgateway groups, CronJob, shared objects."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from traceroute_operator.cleanup import Cleanup
from traceroute_operator.config import OperatorConfig
from traceroute_operator.context import OperatorContext
from traceroute_operator.errors import RetryableError
from traceroute_operator.metrics import OperatorMetrics
from traceroute_operator.ref import ProbeRef
from traceroute_operator.shared import SharedMonitoring
from traceroute_operator.trust import SECRET_OPT_IN_LABEL

from tests.operator.fakes import (
    Clock,
    FakeKube,
    RecordingPushgateway,
    event_reasons,
    probe_body,
    recording_pushgateway,
    refused_url,
    sample,
)

GROUPS = [
    ("DELETE", "/metrics/job/traceroute/namespace/net/probe/edge"),
    ("DELETE", "/metrics/job/traceroute-operator/namespace/net/probe/edge"),
]


@pytest.fixture
def pushgateway() -> Iterator[RecordingPushgateway]:
    with recording_pushgateway() as pgw:
        yield pgw


def cleanup(kube: FakeKube, url: str, allowed: tuple[str, ...] = ()) -> Cleanup:
    config = OperatorConfig(pushgateway_url=url, allowed_pushgateway_urls=allowed)
    ctx = OperatorContext.create(kube, config, OperatorMetrics(), Clock())
    shared = SharedMonitoring(ctx)
    shared.ensure()
    return Cleanup(ctx, shared)


def test_removes_groups_cronjob_and_the_last_shared_objects(
    pushgateway: RecordingPushgateway,
) -> None:
    kube = FakeKube()
    body = probe_body()
    kube.put(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "trp-edge", "namespace": "net"},
        }
    )
    verb = cleanup(kube, pushgateway.url)
    verb.ctx.managed.add(ProbeRef.from_body(body))
    verb.cleanup(body)
    assert [(m, p) for m, p, _ in pushgateway.requests] == GROUPS
    assert kube.stored("cronjobs", "net", "trp-edge") is None
    assert not [k for k in kube.objects if k[0] in ("servicemonitors", "configmaps")]
    assert sample(verb.ctx.metrics, "traceroute_operator_probes") == 0


def test_an_unreachable_pushgateway_is_retried_then_left_with_an_event() -> None:
    kube = FakeKube()
    verb = cleanup(kube, refused_url())
    with pytest.raises(RetryableError, match="deleting Pushgateway groups"):
        verb.cleanup(probe_body())
    assert kube.calls_of("delete") == []  # nothing else before the groups are gone
    verb.cleanup(probe_body(), give_up=True)
    assert event_reasons(kube) == ["PushgatewayCleanupFailed"]
    assert ("cronjobs", "net", "trp-edge") in kube.calls_of("delete")
    assert sample(verb.ctx.metrics, "traceroute_operator_errors_total", stage="pushgateway") == 2


def _auth_secret(kube: FakeKube, labels: dict[str, str] | None) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in (("u", "ann"), ("p", "pw"))}
    meta = {"name": "pgw-auth", "namespace": "net", "labels": labels or {}}
    kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": encoded})


def _own_pushgateway(url: str) -> dict[str, object]:
    return {
        "targets": ["10.0.9.9"],
        "pushgateway": {
            "url": url,
            "basicAuth": {"secretName": "pgw-auth", "usernameKey": "u", "passwordKey": "p"},
        },
    }


def test_a_probes_own_pushgateway_is_reached_with_its_secrets(
    pushgateway: RecordingPushgateway,
) -> None:
    kube = FakeKube()
    _auth_secret(kube, {SECRET_OPT_IN_LABEL: "true"})
    verb = cleanup(kube, refused_url(), allowed=(pushgateway.url,))  # the default would fail
    verb.cleanup(probe_body(spec=_own_pushgateway(pushgateway.url)))
    assert [(m, p) for m, p, _ in pushgateway.requests] == GROUPS
    assert ("secrets", "net", "pgw-auth") in kube.calls_of("get")
    auth = base64.b64encode(b"ann:pw").decode()
    assert pushgateway.authorization == [f"Basic {auth}"] * len(GROUPS)


@pytest.mark.parametrize(
    ("labels", "allowed"),
    [
        ({SECRET_OPT_IN_LABEL: "true"}, False),  # URL not allowed by the admin
        (None, True),  # Secret not opted in
    ],
)
def test_a_refused_pushgateway_is_never_contacted_not_even_to_clean_up(
    pushgateway: RecordingPushgateway, labels: dict[str, str] | None, allowed: bool
) -> None:
    kube = FakeKube()
    _auth_secret(kube, labels)
    verb = cleanup(kube, refused_url(), allowed=(pushgateway.url,) if allowed else ())
    verb.cleanup(probe_body(spec=_own_pushgateway(pushgateway.url)))
    assert pushgateway.requests == []
    assert event_reasons(kube) == ["PushgatewayCleanupSkipped"]
    assert ("cronjobs", "net", "trp-edge") in kube.calls_of("delete")


def test_an_unreadable_spec_cleans_the_default_pushgateway(
    pushgateway: RecordingPushgateway,
) -> None:
    verb = cleanup(FakeKube(), pushgateway.url)
    verb.cleanup(probe_body(spec={"targets": "not a list"}))
    assert [(m, p) for m, p, _ in pushgateway.requests] == GROUPS
