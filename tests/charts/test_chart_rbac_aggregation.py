"""The chart's aggregated ClusterRoles on the real apiserver and controller manager.

The chart's `-edit`/`-view` ClusterRoles carry the aggregate-to-edit/-view labels; the real
clusterrole-aggregation controller merges them into the built-in `edit`, `admin` and `view`
roles (created by the apiserver's RBAC bootstrap). Users here are ServiceAccounts with a
RoleBinding to a built-in role in one namespace, acting with their own tokens.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.chart import by_kind, render
from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeError, KubeRest, ensure_namespace
from devcluster.operator_process import install_crd, probe_manifest, probe_path
from devcluster.runtime import wait_until

pytestmark = pytest.mark.slow

RBAC = "/apis/rbac.authorization.k8s.io/v1"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"


def _grants_probes(kube: KubeRest, role: str, verb: str) -> bool:
    rules = kube.get(f"{RBAC}/clusterroles/{role}").get("rules") or []
    return any(
        "traceroute.dev" in rule.get("apiGroups", [])
        and "tracerouteprobes" in rule.get("resources", [])
        and verb in rule.get("verbs", [])
        for rule in rules
    )


@pytest.fixture(scope="module")
def aggregated_roles(control_plane: ControlPlane, kube: KubeRest) -> Iterator[list[str]]:
    """The chart's aggregated ClusterRoles (as `helm install` creates them), merged into the
    built-in roles; removed afterwards, and the built-in roles lose the rules again."""
    install_crd(control_plane.kubeconfig)
    release = f"agg{uuid.uuid4().hex[:6]}"
    roles = [
        doc
        for doc in by_kind(render(release=release), "ClusterRole")
        if any(k.startswith(AGGREGATE_TO) for k in doc["metadata"].get("labels", {}))
    ]
    names = [role["metadata"]["name"] for role in roles]
    assert len(names) == 2, names
    try:
        for role in roles:
            kube.post(f"{RBAC}/clusterroles", role)
        for builtin, verb in (("edit", "create"), ("admin", "create"), ("view", "get")):
            wait_until(
                functools.partial(_grants_probes, kube, builtin, verb),
                timeout=30,
                what=f"tracerouteprobes aggregated into ClusterRole {builtin}",
            )
        yield names
    finally:
        for name in names:
            with contextlib.suppress(KubeError):
                kube.delete(f"{RBAC}/clusterroles/{name}")
        # the session's other tests must see the built-in roles as a fresh cluster has them
        wait_until(
            lambda: (
                not _grants_probes(kube, "edit", "create")
                and not _grants_probes(kube, "view", "get")
            ),
            timeout=30,
            what="tracerouteprobes gone from the built-in roles",
        )


UserFactory = Callable[[str, str | None], KubeRest]


@pytest.fixture
def user(
    control_plane: ControlPlane, kube: KubeRest, k8s_namespace: str, tmp_path: Path
) -> Iterator[UserFactory]:
    """Callable(name, built-in role or None) -> KubeRest acting as a ServiceAccount of the
    test's namespace, bound to that ClusterRole in that namespace only."""
    clients: list[KubeRest] = []

    def make(name: str, role: str | None) -> KubeRest:
        control_plane.ensure_service_account(k8s_namespace, name)
        if role is not None:
            kube.post(
                f"{RBAC}/namespaces/{k8s_namespace}/rolebindings",
                {
                    "metadata": {"name": f"{name}-{role}"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": name, "namespace": k8s_namespace}
                    ],
                },
            )
        config = control_plane.service_account_kubeconfig(
            k8s_namespace, name, path=tmp_path / f"{name}.kubeconfig"
        )
        client = KubeRest(config)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()


def _status(call: Callable[[], Any]) -> int:
    """HTTP status of a call: 200 when it succeeds."""
    try:
        call()
    except KubeError as exc:
        return exc.status
    return 200


def _probe(name: str) -> dict[str, Any]:
    return probe_manifest(name, {"targets": ["192.0.2.1"]})


@pytest.mark.parametrize("role", ["edit", "admin"])
def test_namespace_editors_manage_probes_but_not_their_status(
    aggregated_roles: list[str],
    user: UserFactory,
    kube: KubeRest,
    k8s_namespace: str,
    role: str,
) -> None:
    editor = user("editor", role)
    ns = k8s_namespace
    created = editor.post(probe_path(ns), _probe("web"))
    assert created["metadata"]["name"] == "web"
    assert [p["metadata"]["name"] for p in editor.get(probe_path(ns))["items"]] == ["web"]
    patched = editor.merge_patch(probe_path(ns, "web"), {"spec": {"maxHops": 12}})
    assert patched["metadata"]["generation"] == 2
    replaced = editor.request("PUT", probe_path(ns, "web"), body=patched)
    assert replaced["spec"]["maxHops"] == 12
    # status is what the operator reports: an editor cannot fake Ready
    status_patch = {"status": {"observedGeneration": 2, "conditions": []}}
    assert (
        _status(lambda: editor.merge_patch(probe_path(ns, "web") + "/status", status_patch)) == 403
    )
    assert editor.get(probe_path(ns, "web") + "/status")["metadata"]["name"] == "web"
    editor.delete(probe_path(ns, "web"))
    assert kube.get(probe_path(ns))["items"] == []
    editor.post(probe_path(ns), _probe("a"))
    editor.post(probe_path(ns), _probe("b"))
    editor.delete(probe_path(ns))  # deletecollection
    wait_until(
        lambda: kube.get(probe_path(ns))["items"] == [], timeout=10, what="collection deleted"
    )


def test_namespace_viewers_read_probes_and_their_status_only(
    aggregated_roles: list[str], user: UserFactory, kube: KubeRest, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    kube.post(probe_path(ns), _probe("web"))
    viewer = user("viewer", "view")
    assert viewer.get(probe_path(ns, "web"))["spec"]["targets"] == ["192.0.2.1"]
    assert [p["metadata"]["name"] for p in viewer.get(probe_path(ns))["items"]] == ["web"]
    assert viewer.get(probe_path(ns, "web") + "/status")["metadata"]["name"] == "web"
    refused = {
        "create": _status(lambda: viewer.post(probe_path(ns), _probe("other"))),
        "patch": _status(
            lambda: viewer.merge_patch(probe_path(ns, "web"), {"spec": {"maxHops": 5}})
        ),
        "patch status": _status(
            lambda: viewer.merge_patch(probe_path(ns, "web") + "/status", {"status": {}})
        ),
        "delete": _status(lambda: viewer.delete(probe_path(ns, "web"))),
        "deletecollection": _status(lambda: viewer.delete(probe_path(ns))),
    }
    assert refused == dict.fromkeys(refused, 403)
    assert [p["metadata"]["name"] for p in kube.get(probe_path(ns))["items"]] == ["web"]


def test_the_roles_reach_only_the_namespace_they_are_bound_in(
    aggregated_roles: list[str], user: UserFactory, kube: KubeRest, k8s_namespace: str
) -> None:
    other = f"t-{uuid.uuid4().hex[:10]}"
    ensure_namespace(kube, other)
    try:
        editor = user("editor", "edit")
        assert _status(lambda: editor.post(probe_path(other), _probe("web"))) == 403
        assert _status(lambda: editor.get(probe_path(other))) == 403
        # and without a binding, nothing at all
        nobody = user("nobody", None)
        assert _status(lambda: nobody.get(probe_path(k8s_namespace))) == 403
        assert _status(lambda: nobody.post(probe_path(k8s_namespace), _probe("web"))) == 403
    finally:
        with contextlib.suppress(KubeError):
            kube.delete(f"/api/v1/namespaces/{other}")
