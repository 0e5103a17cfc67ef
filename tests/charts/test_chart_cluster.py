"""The chart against the real control plane (etcd + kube-apiserver with RBAC and PodSecurity).

- every ci/*-values.yaml render passes a server-side dry run (schema, RBAC objects,
  PodSecurity warnings count as failures) and installs for real with `helm install`;
- the pods the Deployments would create are admitted in a namespace enforcing `restricted`;
- the examples are accepted by the real CRD (and a broken one is refused);
- the operator runs with nothing but the installed ServiceAccount's token and the chart's
  environment, and reconciles a probe; the Argo CD health check reads the real objects.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.chart import (
    CI_VALUES,
    EXAMPLES,
    load_values,
    operator_deployment,
    render_text,
)
from devcluster.cluster import DevCluster
from devcluster.controlplane import ControlPlane
from devcluster.images import push
from devcluster.kubetools import RESTRICTED_LABELS, KubeError, KubeRest, ensure_namespace, kubectl
from devcluster.node_release import NodeOperator, chart_values, prepare_namespace
from devcluster.operator_process import get_or_none, is_ready
from devcluster.paths import CHART
from devcluster.podrunner import HOST_NETNS
from devcluster.promstack import Pushgateway
from devcluster.runtime import wait_until
from devcluster.stack import (
    PROBE_CRD,
    Release,
    crd_established,
    install_crds,
)
from tests.charts.argocd_health import argocd_health

pytestmark = pytest.mark.slow

PULL_SECRET = "regcred"
CI_IDS = [path.name.removesuffix("-values.yaml") for path in CI_VALUES]


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, kube: KubeRest) -> ControlPlane:
    """The session control plane with the prometheus-operator CRDs and the TracerouteProbe CRD
    (what a cluster with kube-prometheus-stack has after the chart's first install)."""
    install_crds(control_plane)
    return control_plane


def _namespaces_named_in(values: dict[str, Any]) -> list[str]:
    """Namespaces a values file points at: they exist on a real cluster before the install."""
    names = list(values.get("operator", {}).get("watchNamespaces", []))
    pushgateway = values.get("pushgateway", {})
    if pushgateway.get("enabled") is False:
        names.append(pushgateway.get("externalService", {}).get("namespace", "monitoring"))
    dashboards = values.get("monitoring", {}).get("dashboards", {}).get("namespace")
    if dashboards:
        names.append(dashboards)
    return names


def _restricted_release_namespace(kube: KubeRest, values_file: Path) -> str:
    namespace = f"trop-{uuid.uuid4().hex[:8]}"
    ensure_namespace(kube, namespace, RESTRICTED_LABELS)
    for name in _namespaces_named_in(load_values(values_file)):
        ensure_namespace(kube, name, RESTRICTED_LABELS)
    return namespace


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_render_passes_server_side_dry_run_without_warnings(
    cluster: ControlPlane, kube: KubeRest, values: Path
) -> None:
    namespace = _restricted_release_namespace(kube, values)
    try:
        manifest = render_text([values], release=f"dry-{namespace}", namespace=namespace)
        result = kubectl(
            ["apply", "--dry-run=server", "--server-side", "--field-manager=helm", "-f", "-"],
            kubeconfig=cluster.kubeconfig,
            input_text=manifest,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        # PodSecurity "restricted" only warns on Deployments; a warning is a failure here
        assert "Warning" not in result.stderr, result.stderr
        kinds = {line.split("/")[0] for line in result.stdout.splitlines() if "/" in line}
        assert {"deployment.apps", "serviceaccount"} <= kinds
    finally:
        kube.delete(f"/api/v1/namespaces/{namespace}")


def _pod_from_template(deployment: dict[str, Any]) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{deployment['metadata']['name']}-admission",
            **{k: v for k, v in template["metadata"].items() if k in ("labels", "annotations")},
        },
        "spec": template["spec"],
    }


@pytest.fixture
def release_factory(cluster: ControlPlane, kube: KubeRest, tmp_path: Path) -> Iterator[Any]:
    releases: list[Release] = []

    def install(values_file: Path, *extra: str) -> Release:
        namespace = _restricted_release_namespace(kube, values_file)
        release = Release(cluster, f"r{uuid.uuid4().hex[:6]}", namespace, tmp_path / "helm")
        result = release.helm(
            "install", release.name, str(CHART), "--values", str(values_file), *extra, check=False
        )
        assert result.returncode == 0, result.stderr
        releases.append(release)
        return release

    try:
        yield install
    finally:
        for release in releases:
            # cleanup only: the pod runners are gone, no hook pod could run now
            release.helm("uninstall", release.name, "--no-hooks", check=False)
            with contextlib.suppress(KubeError):
                kube.delete(f"/api/v1/namespaces/{release.namespace}")


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_helm_install_upgrade_uninstall(
    cluster: ControlPlane,
    kube: KubeRest,
    release_factory: Any,
    pod_runner_factory: Any,
    values: Path,
) -> None:
    template_crd = load_values(values).get("crds", {}).get("template", False)
    # templated CRD: Helm must not create it from crds/ too; the CRD exists in this
    # cluster already, as after a first install with the default, so it is adopted
    extra = ("--skip-crds", "--take-ownership") if template_crd else ()
    release = release_factory(values, *extra)
    status = json.loads(release.helm("status", release.name, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    manifest = release.manifest()
    for doc in manifest:
        meta = doc["metadata"]
        namespace = meta.get("namespace")
        kubectl(
            ["get", doc["kind"], meta["name"], *(["-n", namespace] if namespace else [])],
            kubeconfig=cluster.kubeconfig,
        )
    # the pods the Deployments would start are admitted under PodSecurity "restricted"
    for deployment in [d for d in manifest if d["kind"] == "Deployment"]:
        pod = _pod_from_template(deployment)
        result = kubectl(
            ["create", "--dry-run=server", "-n", release.namespace, "-f", "-"],
            kubeconfig=cluster.kubeconfig,
            input_text=json.dumps(pod),
            check=False,
        )
        assert result.returncode == 0, result.stderr
    # an upgrade with the same values changes nothing and succeeds
    upgrade = release.helm(
        "upgrade",
        release.name,
        str(CHART),
        "--values",
        str(values),
        *(("--skip-crds",) if template_crd else ()),
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    # the pre-delete hook's pod runs (no probes here: it finds none and succeeds)
    pod_runner_factory(
        namespace=release.namespace,
        label_selector="app.kubernetes.io/component=uninstall",
        netns_for_pod=lambda pod: HOST_NETNS,
    )
    release.helm("uninstall", release.name, "--timeout", "2m")
    # gone, except the CRD (crds/ is never deleted by Helm; the templated one is `keep`).
    # A PersistentVolumeClaim may stay Terminating: its protection finalizer is removed by a
    # controller this control plane does not run.
    for doc in manifest:
        if doc["kind"] == "CustomResourceDefinition":
            continue
        meta = doc["metadata"]
        namespace = meta.get("namespace")
        result = kubectl(
            [
                "get",
                doc["kind"],
                meta["name"],
                "-o",
                "json",
                *(["-n", namespace] if namespace else []),
            ],
            kubeconfig=cluster.kubeconfig,
            check=False,
        )
        if result.returncode == 0:
            assert json.loads(result.stdout)["metadata"].get("deletionTimestamp"), doc["kind"]
        else:
            assert "NotFound" in result.stderr, (doc["kind"], meta["name"], result.stderr)
    assert crd_established(kube, PROBE_CRD)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_accepted_by_the_real_crd(
    cluster: ControlPlane, k8s_namespace: str, example: Path
) -> None:
    result = kubectl(
        ["create", "--dry-run=server", "-n", k8s_namespace, "-f", str(example), "-o", "json"],
        kubeconfig=cluster.kubeconfig,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    # the apiserver filled in the schema defaults: the object is what the operator will see
    assert created["spec"]["maxHops"] == 30 and "protocol" in created["spec"]


def test_a_broken_example_is_refused_naming_the_field(
    cluster: ControlPlane, k8s_namespace: str
) -> None:
    broken = yaml.safe_load((EXAMPLES[0]).read_text())
    broken["spec"]["port"] = 443  # only valid with udp/tcp
    result = kubectl(
        ["create", "--dry-run=server", "-n", k8s_namespace, "-f", "-"],
        kubeconfig=cluster.kubeconfig,
        input_text=json.dumps(broken),
        check=False,
    )
    assert result.returncode != 0
    assert "spec.port" in result.stderr


# --- the operator pod of the installed Deployment --------------------------------------------


@dataclass(frozen=True)
class OperatorEnv:
    cluster: ControlPlane
    kube: KubeRest
    install: Any  # node_release_factory
    pushgateway: Pushgateway
    dev: DevCluster


@pytest.fixture(scope="module")
def node_cluster(dev_cluster: DevCluster) -> DevCluster:
    """The cluster with real nodes, the operator image in its registry and the CRDs."""
    assert dev_cluster.built is not None and dev_cluster.registry is not None
    assert dev_cluster.control_plane is not None
    push(dev_cluster.built, "traceroute-operator", dev_cluster.registry)
    install_crds(dev_cluster.control_plane)
    return dev_cluster


@pytest.fixture
def env(node_cluster: DevCluster, tmp_path: Path) -> Iterator[OperatorEnv]:
    """Releases on the real nodes: each in a restricted namespace with the pull Secret."""
    assert node_cluster.control_plane is not None and node_cluster.pushgateway is not None
    control_plane = node_cluster.control_plane
    releases: list[Release] = []
    with KubeRest(node_cluster.kubeconfig) as kube:

        def install(values_file: Path, *extra: str) -> Release:
            namespace = _restricted_release_namespace(kube, values_file)
            prepare_namespace(kube, node_cluster, namespace, PULL_SECRET)
            release = Release(
                control_plane, f"r{uuid.uuid4().hex[:6]}", namespace, tmp_path / "helm"
            )
            result = release.helm(
                *("install", release.name, str(CHART), "--values", str(values_file), *extra),
                check=False,
            )
            assert result.returncode == 0, result.stderr
            releases.append(release)
            return release

        try:
            yield OperatorEnv(control_plane, kube, install, node_cluster.pushgateway, node_cluster)
        finally:
            for release in releases:
                release.helm("uninstall", release.name, "--wait", "--timeout=60s", check=False)
                with contextlib.suppress(KubeError):
                    kube.delete(f"/api/v1/namespaces/{release.namespace}")


def install_operator(env: OperatorEnv, values_file: Path) -> NodeOperator:
    """Install the chart with the values file, every image from the private registry, and
    wait for the operator's pod on a real node. Differences from a cluster, all by values:
    no cluster DNS, so the Pushgateway is the DevCluster's, given as an external URL."""
    release: Release = env.install(values_file, *chart_values(env.dev, PULL_SECRET))
    operator = NodeOperator(release, env.kube)
    operator.wait_serving()
    return operator


def _probe_manifest(name: str) -> dict[str, Any]:
    probe: dict[str, Any] = yaml.safe_load(
        next(p for p in EXAMPLES if p.stem == "single-target").read_text()
    )
    probe["metadata"]["name"] = name
    probe["spec"]["targets"] = ["192.0.2.1"]  # never traced: no run is started here
    return probe


def _wait_ready(kube: KubeRest, path: str, operator: NodeOperator) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = kube.get(path)
        return obj if is_ready(obj) else None

    try:
        found: dict[str, Any] = wait_until(ready, timeout=60, what=f"{path} Ready")
        return found
    except TimeoutError:
        print(operator.logs())
        raise


def _gone(kube: KubeRest, path: str) -> bool:
    return get_or_none(kube, path) is None


def test_installed_chart_runs_the_operator(env: OperatorEnv, node_namespace: str) -> None:
    k8s_namespace = node_namespace
    kube, pushgateway = env.kube, env.pushgateway
    values_file = next(p for p in CI_VALUES if p.name == "default-values.yaml")
    operator = install_operator(env, values_file)
    release_ns = operator.release.namespace
    probes = f"/apis/traceroute.dev/v1alpha1/namespaces/{k8s_namespace}/tracerouteprobes"

    kube.post(probes, _probe_manifest("web"))
    probe = _wait_ready(kube, f"{probes}/web", operator)
    cronjob_path = f"/apis/batch/v1/namespaces/{k8s_namespace}/cronjobs/"
    cronjob_path += probe["status"]["cronJobName"]
    cronjob = kube.get(cronjob_path)
    assert cronjob["spec"]["schedule"] == "*/5 * * * *"
    assert cronjob["metadata"]["ownerReferences"][0]["name"] == "web"
    assert argocd_health(probe).status == "Healthy"
    # what the operator generated with the chart's RBAC, where the chart's values said
    monitoring = "/apis/monitoring.coreos.com/v1/namespaces"
    assert kube.get(f"{monitoring}/{k8s_namespace}/prometheusrules")["items"], operator.logs()
    wait_until(
        lambda: kube.get(f"{monitoring}/{release_ns}/servicemonitors")["items"],
        timeout=30,
        what="shared ServiceMonitor in the release namespace",
    )
    dashboards = kube.get(
        f"/api/v1/namespaces/{release_ns}/configmaps", labelSelector="grafana_dashboard=1"
    )["items"]
    assert dashboards, operator.logs()

    # operator scaled away (Recreate: the pod is gone first): a spec change is not acted on,
    # and Argo CD sees the real object as Progressing
    operator.scale(0)
    kube.merge_patch(f"{probes}/web", {"spec": {"schedule": "*/7 * * * *"}})
    stale = kube.get(f"{probes}/web")
    assert stale["metadata"]["generation"] > stale["status"]["observedGeneration"]
    assert argocd_health(stale).status == "Progressing"
    operator.scale(1)
    probe = _wait_ready(kube, f"{probes}/web", operator)
    assert argocd_health(probe).status == "Healthy"
    assert kube.get(cronjob_path)["spec"]["schedule"] == "*/7 * * * *"

    # delete: the operator removes the probe's group from the Pushgateway the chart names
    grouping = {"namespace": k8s_namespace, "probe": "web"}
    run = "# TYPE traceroute_run_timestamp_seconds gauge\ntraceroute_run_timestamp_seconds 1\n"
    pushgateway.push("traceroute", grouping, run)
    assert [g for g in pushgateway.groups() if g["labels"].get("namespace") == k8s_namespace]
    kube.delete(f"{probes}/web")
    wait_until(lambda: _gone(kube, f"{probes}/web"), timeout=60, what="probe deleted")
    remaining = [g["labels"] for g in pushgateway.groups()]
    assert not [
        g for g in remaining if g.get("probe") == "web" and g.get("namespace") == k8s_namespace
    ]


def test_helm_uninstall_with_probes_present_cleans_up_and_lets_the_namespace_go(
    env: OperatorEnv, node_namespace: str
) -> None:
    # the namespace lives in the real-node cluster the release is installed in
    kube, pushgateway, k8s_namespace = env.kube, env.pushgateway, node_namespace
    values_file = next(p for p in CI_VALUES if p.name == "default-values.yaml")
    operator = install_operator(env, values_file)
    release = operator.release
    # the pre-delete hook's pod (the operator image running `traceroute-operator uninstall`)
    # runs on a real node, like the operator's own pod
    probes = f"/apis/traceroute.dev/v1alpha1/namespaces/{k8s_namespace}/tracerouteprobes"
    names = [f"u{i:02d}" for i in range(10)]
    for name in names:
        kube.post(probes, _probe_manifest(name))
    run = "# TYPE traceroute_run_timestamp_seconds gauge\ntraceroute_run_timestamp_seconds 1\n"
    for name in names:
        _wait_ready(kube, f"{probes}/{name}", operator)
        pushgateway.push("traceroute", {"namespace": k8s_namespace, "probe": name}, run)
    cronjobs = f"/apis/batch/v1/namespaces/{k8s_namespace}/cronjobs"
    assert len(kube.get(cronjobs)["items"]) == 10

    result = release.helm("uninstall", release.name, "--timeout", "3m", check=False)
    assert result.returncode == 0, result.stderr + operator.logs()
    assert kube.get(probes)["items"] == []
    assert kube.get(cronjobs)["items"] == []
    assert not [g for g in pushgateway.groups() if g["labels"].get("namespace") == k8s_namespace]
    # the hook's objects went with it (hook-succeeded), the operator's with the release
    hooks = kube.get(
        f"/apis/batch/v1/namespaces/{release.namespace}/jobs",
        labelSelector="app.kubernetes.io/component=uninstall",
    )["items"]
    assert hooks == []
    kube.delete(f"/api/v1/namespaces/{k8s_namespace}")
    wait_until(
        lambda: _gone(kube, f"/api/v1/namespaces/{k8s_namespace}"),
        timeout=60,
        what="probe namespace deleted",
    )


def _can_i(kubeconfig: Path, verb: str, resource: str, namespace: str) -> bool:
    """What the apiserver's RBAC says for that token (`*`: in every namespace at once)."""
    scope = ["--all-namespaces"] if namespace == "*" else ["-n", namespace]
    result = kubectl(["auth", "can-i", verb, resource, *scope], kubeconfig=kubeconfig, check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def test_namespaced_operator_serves_only_its_namespaces(
    env: OperatorEnv, node_namespace: str
) -> None:
    kube, k8s_namespace = env.kube, node_namespace
    values_file = next(p for p in CI_VALUES if p.name == "namespaced-rbac-values.yaml")
    watched = load_values(values_file)["operator"]["watchNamespaces"]
    operator = install_operator(env, values_file)
    release = operator.release
    account = operator_deployment(release.manifest())["spec"]["template"]["spec"]
    token = env.cluster.service_account_kubeconfig(release.namespace, account["serviceAccountName"])
    for namespace in watched:
        assert _can_i(token, "create", "cronjobs.batch", namespace)
    # nothing outside the watched namespaces, nothing cluster-wide
    assert not _can_i(token, "create", "cronjobs.batch", k8s_namespace)
    assert _can_i(token, "list", "tracerouteprobes.traceroute.dev", watched[0])
    assert not _can_i(token, "list", "tracerouteprobes.traceroute.dev", "*")
    assert not _can_i(token, "list", "pods", k8s_namespace)
    assert not _can_i(token, "list", "secrets", watched[0])

    served = f"/apis/traceroute.dev/v1alpha1/namespaces/{watched[0]}/tracerouteprobes"
    ignored = f"/apis/traceroute.dev/v1alpha1/namespaces/{k8s_namespace}/tracerouteprobes"
    name = f"p{uuid.uuid4().hex[:6]}"
    kube.post(ignored, _probe_manifest(name))
    kube.post(served, _probe_manifest(name))
    try:
        _wait_ready(kube, f"{served}/{name}", operator)
        time.sleep(2)  # the operator had the chance to (wrongly) act on the other one
        # nothing but the CRD's status default: the operator wrote no status
        assert kube.get(f"{ignored}/{name}")["status"] == {"observedGeneration": 0}
    finally:
        kube.delete(f"{served}/{name}")
        wait_until(lambda: _gone(kube, f"{served}/{name}"), timeout=60, what="probe deleted")
        kube.delete(f"{ignored}/{name}")
