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
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.argocd_health import argocd_health
from tests.charts.chartgen import CHART, CRD_SOURCE
from tests.charts.charttools import (
    CI_VALUES,
    EXAMPLES,
    load_values,
    operator_deployment,
    operator_environment,
    render_text,
)
from tests.realenv.cluster_fixtures import RESTRICTED_LABELS
from tests.realenv.controlplane import ControlPlane
from tests.realenv.kubetools import KubeError, KubeRest, helm, kubectl
from tests.realenv.promstack import Pushgateway
from tests.realenv.runtime import CACHE, wait_until

pytestmark = pytest.mark.slow

CI_IDS = [path.name.removesuffix("-values.yaml") for path in CI_VALUES]
MONITORING_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")
PROBE_CRD = "tracerouteprobes.traceroute.dev"


def _prometheus_operator_crds() -> list[Path]:
    dirs = sorted(CACHE.glob("prometheus-operator-crds-*/crds"))
    assert dirs, f"prometheus-operator CRDs missing under {CACHE}: run `make env`"
    return [dirs[-1] / f"monitoring.coreos.com_{plural}.yaml" for plural in MONITORING_CRDS]


def _established(kube: KubeRest, name: str) -> bool:
    crd = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    return any(
        c["type"] == "Established" and c["status"] == "True"
        for c in crd.get("status", {}).get("conditions", [])
    )


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, kube: KubeRest) -> ControlPlane:
    """The session control plane with the prometheus-operator CRDs and the TracerouteProbe CRD
    (what a cluster with kube-prometheus-stack has after the chart's first install)."""
    files = [*_prometheus_operator_crds(), CRD_SOURCE]
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=chart-tests"]
    for path in files:
        args += ["-f", str(path)]
    kubectl(args, kubeconfig=control_plane.kubeconfig)
    for name in [f"{p}.monitoring.coreos.com" for p in MONITORING_CRDS] + [PROBE_CRD]:
        wait_until(lambda n=name: _established(kube, n), timeout=30, what=f"CRD {name}")
    return control_plane


def _ensure_namespace(kube: KubeRest, name: str) -> None:
    with contextlib.suppress(KubeError):  # exists already (fixed names from ci/ files)
        kube.post("/api/v1/namespaces", {"metadata": {"name": name, "labels": RESTRICTED_LABELS}})


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
    _ensure_namespace(kube, namespace)
    for name in _namespaces_named_in(load_values(values_file)):
        _ensure_namespace(kube, name)
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


class Release:
    def __init__(self, cluster: ControlPlane, name: str, namespace: str, home: Path) -> None:
        self.cluster, self.name, self.namespace, self.home = cluster, name, namespace, home

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(
            [*args, "--namespace", self.namespace],
            kubeconfig=self.cluster.kubeconfig,
            home=self.home,
            check=check,
        )

    def manifest(self) -> list[dict[str, Any]]:
        text = self.helm("get", "manifest", self.name).stdout
        return [d for d in yaml.safe_load_all(text) if d]


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
            release.helm("uninstall", release.name, check=False)
            with contextlib.suppress(KubeError):
                kube.delete(f"/api/v1/namespaces/{release.namespace}")


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_helm_install_upgrade_uninstall(
    cluster: ControlPlane, kube: KubeRest, release_factory: Any, values: Path
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
    release.helm("uninstall", release.name)
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
    assert _established(kube, PROBE_CRD)


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


# --- the operator with the chart's RBAC --------------------------------------------------------


class OperatorProcess:
    """The operator as the chart's Deployment runs it: its env, its args, the SA's token."""

    def __init__(self, env: dict[str, str], args: list[str], kubeconfig: Path, log: Path) -> None:
        self.env, self.args, self.kubeconfig, self.log = env, args, kubeconfig, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **self.env,
            "KUBECONFIG": str(self.kubeconfig),
        }
        executable = Path(sys.executable).parent / "traceroute-operator"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(executable), *self.args], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def running_operator(
    release: Release, pushgateway: Pushgateway, log: Path
) -> Iterator[OperatorProcess]:
    manifest = release.manifest()
    deployment = operator_deployment(manifest)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = operator_environment(manifest, release.namespace)
    # No cluster DNS here: the Pushgateway Service name resolves to the session's
    # Pushgateway process. Ports 0: several operators may run on one host.
    env["TRACEROUTE_PUSHGATEWAY_URL"] = pushgateway.url
    env["TRACEROUTE_METRICS_PORT"] = "0"
    env["TRACEROUTE_LIVENESS_ENDPOINT"] = ""
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = release.cluster.service_account_kubeconfig(release.namespace, account)
    operator = OperatorProcess(env, list(container.get("args", [])), kubeconfig, log)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@dataclass(frozen=True)
class OperatorEnv:
    cluster: ControlPlane
    kube: KubeRest
    install: Any  # release_factory
    pushgateway: Pushgateway
    log_dir: Path


@pytest.fixture
def env(
    cluster: ControlPlane,
    kube: KubeRest,
    release_factory: Any,
    pushgateway: Pushgateway,
    tmp_path: Path,
) -> OperatorEnv:
    return OperatorEnv(cluster, kube, release_factory, pushgateway, tmp_path)


def _probe_manifest(name: str) -> dict[str, Any]:
    probe: dict[str, Any] = yaml.safe_load(
        next(p for p in EXAMPLES if p.stem == "single-target").read_text()
    )
    probe["metadata"]["name"] = name
    probe["spec"]["targets"] = ["192.0.2.1"]  # never traced: no pod runner in these tests
    return probe


def _wait_ready(
    kube: KubeRest, namespace: str, name: str, operator: OperatorProcess
) -> dict[str, Any]:
    path = f"/apis/traceroute.dev/v1alpha1/namespaces/{namespace}/tracerouteprobes/{name}"

    def ready() -> dict[str, Any] | None:
        assert operator.proc is not None and operator.proc.poll() is None, operator.log_tail()
        obj = kube.get(path)
        status = obj.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        if (
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and conditions.get("Ready") == "True"
        ):
            return obj
        return None

    try:
        found: dict[str, Any] = wait_until(
            ready, timeout=60, what=f"TracerouteProbe {namespace}/{name} Ready"
        )
        return found
    except Exception:
        print(operator.log_tail())
        raise


def test_operator_runs_with_the_installed_service_account(
    env: OperatorEnv, k8s_namespace: str
) -> None:
    kube, pushgateway = env.kube, env.pushgateway
    release_factory, tmp_path = env.install, env.log_dir
    values_file = next(p for p in CI_VALUES if p.name == "default-values.yaml")
    release = release_factory(values_file)
    base = f"/apis/traceroute.dev/v1alpha1/namespaces/{k8s_namespace}/tracerouteprobes"
    with running_operator(release, pushgateway, tmp_path / "operator.log") as operator:
        kube.post(base, _probe_manifest("web"))
        probe = _wait_ready(kube, k8s_namespace, "web", operator)
        cronjob_name = probe["status"]["cronJobName"]
        cronjob = kube.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/cronjobs/{cronjob_name}")
        assert cronjob["spec"]["schedule"] == "*/5 * * * *"
        assert cronjob["metadata"]["ownerReferences"][0]["name"] == "web"
        assert argocd_health(probe).status == "Healthy"
        # the generated monitoring objects, written with the chart's RBAC
        rules = kube.get(
            f"/apis/monitoring.coreos.com/v1/namespaces/{k8s_namespace}/prometheusrules"
        )
        assert rules["items"], operator.log_tail()

    # operator down: a spec change is not acted on, Argo CD sees Progressing on the real object
    kube.merge_patch(f"{base}/web", {"spec": {"schedule": "*/7 * * * *"}})
    stale = kube.get(f"{base}/web")
    assert stale["metadata"]["generation"] > stale["status"]["observedGeneration"]
    assert argocd_health(stale).status == "Progressing"

    with running_operator(release, pushgateway, tmp_path / "operator.log") as operator:
        probe = _wait_ready(kube, k8s_namespace, "web", operator)
        assert argocd_health(probe).status == "Healthy"
        cronjob = kube.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/cronjobs/{cronjob_name}")
        assert cronjob["spec"]["schedule"] == "*/7 * * * *"
        kube.delete(f"{base}/web")
        wait_until(
            lambda: _gone(kube, f"{base}/web"), timeout=60, what="probe deleted (finalizer done)"
        )


def _gone(kube: KubeRest, path: str) -> bool:
    try:
        kube.get(path)
    except KubeError as exc:
        return exc.status == 404
    return False


def _can_i(kubeconfig: Path, verb: str, resource: str, namespace: str) -> bool:
    """What the apiserver's RBAC says for that token (`*`: in every namespace at once)."""
    scope = ["--all-namespaces"] if namespace == "*" else ["-n", namespace]
    result = kubectl(["auth", "can-i", verb, resource, *scope], kubeconfig=kubeconfig, check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def test_namespaced_operator_serves_only_its_namespaces(
    env: OperatorEnv, k8s_namespace: str
) -> None:
    cluster, kube, pushgateway = env.cluster, env.kube, env.pushgateway
    release_factory, tmp_path = env.install, env.log_dir
    values_file = next(p for p in CI_VALUES if p.name == "namespaced-rbac-values.yaml")
    watched = load_values(values_file)["operator"]["watchNamespaces"]
    release = release_factory(values_file)
    account = operator_deployment(release.manifest())["spec"]["template"]["spec"][
        "serviceAccountName"
    ]
    token = cluster.service_account_kubeconfig(release.namespace, account)
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
    with running_operator(release, pushgateway, tmp_path / "operator.log") as operator:
        kube.post(ignored, _probe_manifest(name))
        kube.post(served, _probe_manifest(name))
        try:
            _wait_ready(kube, watched[0], name, operator)
            time.sleep(2)  # the operator had the chance to (wrongly) act on the other one
            assert "status" not in kube.get(f"{ignored}/{name}")
        finally:
            kube.delete(f"{served}/{name}")
            wait_until(lambda: _gone(kube, f"{served}/{name}"), timeout=60, what="probe deleted")
            kube.delete(f"{ignored}/{name}")
