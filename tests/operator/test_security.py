"""The exfiltration attempt of issue 11, against the real apiserver with the operator's RBAC.

A namespace user who may only manage TracerouteProbes (Forbidden on Secrets, pods and
CronJobs) tries every field that names a Secret, URL, CA, image or pull secret. Their
"Pushgateway" is a recording HTTP server on loopback, reachable by the operator; it must
never receive a request, and no CronJob that would mount, pull or push what the rules
refuse may exist. A positive control (an opted-in Secret, an allowed URL) shows that the
same test sees a mount when one is allowed.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeError, KubeRest
from devcluster.operator_process import (
    OperatorProcess,
    condition,
    events_for,
    get_or_none,
    get_probe,
    probe_manifest,
    probe_path,
)
from devcluster.runtime import wait_until
from tests.operator.fakes import RecordingPushgateway, recording_pushgateway

pytestmark = pytest.mark.slow

SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex
AUTHOR = "probe-author"


@pytest.fixture
def attacker() -> Iterator[RecordingPushgateway]:
    with recording_pushgateway() as server:
        yield server


def _put_secret(kube: KubeRest, namespace: str, name: str, labels: dict[str, str]) -> None:
    data = {
        key: base64.b64encode(SECRET_VALUE.encode()).decode()
        for key in ("username", "password", "ca.crt")
    }
    kube.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": labels},
            "data": data,
        },
    )


@pytest.fixture
def author(control_plane: ControlPlane, kube: KubeRest, k8s_namespace: str) -> Iterator[KubeRest]:
    """A user (a ServiceAccount token) with rights on TracerouteProbes only."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    kube.post(
        f"{rbac}/namespaces/{k8s_namespace}/roles",
        {
            "metadata": {"name": AUTHOR},
            "rules": [
                {
                    "apiGroups": ["traceroute.dev"],
                    "resources": ["tracerouteprobes", "tracerouteprobes/status"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                }
            ],
        },
    )
    control_plane.ensure_service_account(k8s_namespace, AUTHOR)
    kube.post(
        f"{rbac}/namespaces/{k8s_namespace}/rolebindings",
        {
            "metadata": {"name": AUTHOR},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AUTHOR},
            "subjects": [{"kind": "ServiceAccount", "name": AUTHOR, "namespace": k8s_namespace}],
        },
    )
    path = control_plane.service_account_kubeconfig(k8s_namespace, AUTHOR)
    with KubeRest(path) as rest:
        yield rest


def _forbidden(call: Callable[[], Any]) -> bool:
    try:
        call()
    except KubeError as exc:
        return exc.status == 403
    return False


def _stalled_reason(kube: KubeRest, namespace: str, name: str) -> str | None:
    stalled = condition(get_probe(kube, namespace, name), "Stalled")
    return stalled.get("reason") if stalled.get("status") == "True" else None


ATTEMPTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "url-and-secret",
        {"pushgateway": {"url": "ATTACKER", "basicAuth": {"secretName": "db"}}},
        "PushgatewayURLNotAllowed",
    ),
    ("url-only", {"pushgateway": {"url": "ATTACKER"}}, "PushgatewayURLNotAllowed"),
    ("default-url-auth", {"pushgateway": {"basicAuth": {"secretName": "db"}}}, "SECRET"),
    ("default-url-ca", {"pushgateway": {"tlsCA": {"secretName": "db", "key": "ca.crt"}}}, "SECRET"),
    ("image", {"image": "attacker.example/exfiltrate:latest"}, "ProbeImageNotAllowed"),
    (
        "pull-secret",
        {"image": "attacker.example/x:1", "imagePullSecrets": [{"name": "db"}]},
        "ProbeImageNotAllowed",
    ),
]


@pytest.mark.parametrize(
    "operator_reads_secrets", [False, True], ids=["no-secret-rbac", "secret-rbac"]
)
def test_a_probe_author_gains_nothing_through_the_operator(  # noqa: PLR0917 - fixtures
    operator_factory: Callable[..., OperatorProcess],
    kube: KubeRest,
    author: KubeRest,
    k8s_namespace: str,
    attacker: RecordingPushgateway,
    operator_reads_secrets: bool,
) -> None:
    ns = k8s_namespace
    _put_secret(kube, ns, "db", labels={})  # an ordinary Secret, not opted in
    # what the author could do before: nothing with Secrets, pods or CronJobs
    assert _forbidden(lambda: author.get(f"/api/v1/namespaces/{ns}/secrets/db"))
    assert _forbidden(lambda: author.get(f"/api/v1/namespaces/{ns}/pods"))
    assert _forbidden(lambda: author.get(f"/apis/batch/v1/namespaces/{ns}/cronjobs"))
    secrets = (ns,) if operator_reads_secrets else ()
    operator_factory(secret_namespaces=secrets).start()
    secret_rule = "SecretNotOptedIn" if operator_reads_secrets else "SecretNotReadable"
    for name, spec, _ in ATTEMPTS:
        spec_json = json.dumps(spec).replace("ATTACKER", attacker.url)
        body = probe_manifest(name, {"targets": ["192.0.2.1"], **json.loads(spec_json)})
        author.post(probe_path(ns), body)
    for name, _, rule in ATTEMPTS:
        expected = secret_rule if rule == "SECRET" else rule
        wait_until(
            lambda n=name, e=expected: _stalled_reason(kube, ns, n) == e,
            timeout=30,
            what=f"probe {name} stalled by {expected}",
        )
        # the author reads why, naming the field and the rule
        message = condition(get_probe(author, ns, name), "Stalled")["message"]
        assert f"rule {expected}" in message and message.startswith("spec.")
    cronjobs = kube.get(f"/apis/batch/v1/namespaces/{ns}/cronjobs")["items"]
    assert cronjobs == [], "a CronJob was made for a refused probe"
    # deletion: the operator's cleanup never contacts the refused URL either
    for name, _, _ in ATTEMPTS:
        author.delete(probe_path(ns, name))
    wait_until(lambda: not kube.get(probe_path(ns))["items"], timeout=60, what="probes deleted")
    assert attacker.requests == []
    everything = json.dumps(kube.get(f"/api/v1/namespaces/{ns}/events"))
    assert SECRET_VALUE not in everything
    for name, _, _ in ATTEMPTS:
        assert [e["reason"] for e in events_for(kube, ns, name, "TrustRefused")], name


def test_an_opted_in_secret_and_an_allowed_url_are_used(
    operator_factory: Callable[..., OperatorProcess],
    kube: KubeRest,
    author: KubeRest,
    k8s_namespace: str,
    attacker: RecordingPushgateway,
) -> None:
    """The positive control: the same checks see the mount once the admin allows it."""
    ns = k8s_namespace
    _put_secret(kube, ns, "pgw", labels={"traceroute.dev/pushgateway-credentials": "true"})
    operator_factory(
        env={"TRACEROUTE_ALLOWED_PUSHGATEWAY_URLS": attacker.url}, secret_namespaces=(ns,)
    ).start()
    spec = {
        "targets": ["192.0.2.1"],
        "pushgateway": {"url": attacker.url, "basicAuth": {"secretName": "pgw"}},
    }
    author.post(probe_path(ns), probe_manifest("allowed", spec))
    path = f"/apis/batch/v1/namespaces/{ns}/cronjobs/trp-allowed"
    wait_until(
        lambda: get_or_none(kube, path) is not None, timeout=30, what="CronJob of the allowed probe"
    )
    pod = kube.get(path)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {"pgw"}
    assert attacker.url in pod["containers"][0]["args"]
    # deletion cleans the groups on the allowed Pushgateway, with the opted-in credentials
    author.delete(probe_path(ns, "allowed"))
    wait_until(lambda: len(attacker.requests) >= 2, timeout=30, what="cleanup DELETEs")
    auth = base64.b64encode(f"{SECRET_VALUE}:{SECRET_VALUE}".encode()).decode()
    assert {m for m, *_ in attacker.requests} == {"DELETE"}
    assert set(attacker.authorization) == {f"Basic {auth}"}
