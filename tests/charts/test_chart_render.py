"""The chart rendered by the real helm (v4), checked offline.

The same renders go to a real apiserver in test_chart_cluster.py; here: lint, schema,
upstream strict schemas (kubernetes-validate), and the settings the operator actually reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from traceroute_operator.config import ENV_REFERENCE, OperatorConfig
from traceroute_operator.monitoring.settings import env_reference

from devcluster.chart import (
    CI_VALUES,
    RELEASE_NAMESPACE,
    by_kind,
    helm_cmd,
    load_values,
    one,
    operator_deployment,
    operator_environment,
    render,
    render_error,
)
from devcluster.paths import CHART, CRD_SOURCE, RBAC_SOURCE

CI_IDS = [path.name.removesuffix("-values.yaml") for path in CI_VALUES]


def test_ci_values_cover_the_documented_situations() -> None:
    assert set(CI_IDS) >= {
        "default",
        "namespaced-rbac",
        "external-pushgateway",
        "private-registry",
        "monitoring-off",
        "crd-template",
    }


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_helm_lint_strict(values: Path) -> None:
    result = helm_cmd(["lint", "--strict", str(CHART), "--values", str(values)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_rendered_builtin_objects_pass_the_strict_upstream_schemas(values: Path) -> None:
    docs = render([values])
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(("monitoring.coreos.com/", "apiextensions.k8s.io/")):
            continue  # CRD-defined kinds: the real apiserver checks them (slow tests)
        kubernetes_validate.validate(doc, "1.36.0", strict=True)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_every_setting_the_chart_passes_is_one_the_operator_reads(values: Path) -> None:
    env = operator_environment(render([values]), RELEASE_NAMESPACE)
    known = {name for name, _, _ in ENV_REFERENCE} | {name for name, _ in env_reference()}
    unknown = sorted(set(env) - known)
    assert unknown == [], f"the operator does not read {unknown}"
    # and the operator accepts every value as rendered
    OperatorConfig.from_env(env)


def test_operator_configuration_follows_the_values() -> None:
    values = {
        "operator.watchNamespaces": "{team-b,team-a}",
        "operator.livenessPort": "9801",
        "metrics.port": "9802",
        "probe.image.digest": "sha256:" + "ab" * 32,
        "image.registry": "registry.lab.internal:5000",
        "probe.resources.requests.cpu": "30m",
        "monitoring.additionalLabels.release": "kps",
        "monitoring.serviceMonitor.labels.team": "net",
        "monitoring.prometheusRule.severities.TracerouteProbeStale": "critical",
        "monitoring.prometheusRule.alertLabels.team": "net",
        "monitoring.dashboards.namespace": "grafana",
        "monitoring.dashboards.folder": "Network",
    }
    docs = render(set_values=values)
    config = OperatorConfig.from_env(operator_environment(docs, RELEASE_NAMESPACE))
    assert config.watch_namespaces == ("team-a", "team-b")
    assert config.liveness_endpoint == "http://0.0.0.0:9801/healthz"
    assert config.metrics_port == 9802
    assert config.probe_image == (
        "registry.lab.internal:5000/traceroute-operator/traceroute-probe@sha256:" + "ab" * 32
    )
    assert config.probe_cpu_request == "30m"
    assert config.operator_namespace == RELEASE_NAMESPACE
    assert config.default_pushgateway_url == (
        f"http://trop-traceroute-operator-pushgateway.{RELEASE_NAMESPACE}.svc:9091"
    )
    mon = config.monitoring
    assert mon.servicemonitor_labels == {"release": "kps", "team": "net"}
    assert mon.prometheusrule_labels == {"release": "kps"}
    assert mon.alert_labels == {"team": "net"}
    assert mon.severity("TracerouteProbeStale") == "critical"
    assert mon.severity("TracerouteDestinationUnreachable") == "critical"
    assert mon.dashboards_namespace == "grafana"
    assert mon.dashboard_folder == "Network"
    # the generated ServiceMonitor must find the bundled Pushgateway's Service
    service = one(docs, "Service", "-pushgateway")
    assert mon.pushgateway_service == service["metadata"]["name"]
    assert mon.pushgateway_namespace == service["metadata"]["namespace"]
    assert mon.pushgateway_port == service["spec"]["ports"][0]["port"]
    assert mon.pushgateway_port_name == service["spec"]["ports"][0]["name"]
    assert set(mon.pushgateway_selector.items()) <= set(service["metadata"]["labels"].items())
    # the kubelet probes the port the operator serves its liveness endpoint on
    container = operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["healthz"] == 9801 and ports["metrics"] == 9802
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["args"] == ["run"]
    verbose = operator_deployment(render(set_values={"operator.verbose": "true"}))
    assert verbose["spec"]["template"]["spec"]["containers"][0]["args"] == ["run", "--verbose"]


def test_external_pushgateway_with_tls_and_basic_auth() -> None:
    values_file = next(p for p in CI_VALUES if p.name == "external-pushgateway-values.yaml")
    docs = render([values_file])
    assert not [d for d in docs if "pushgateway" in d["metadata"]["name"]]
    config = OperatorConfig.from_env(operator_environment(docs, RELEASE_NAMESPACE))
    assert config.default_pushgateway_url == "https://prometheus-pushgateway.monitoring.svc:9091"
    assert config.pushgateway_ca_secret is not None
    assert (config.pushgateway_ca_secret.secret_name, config.pushgateway_ca_secret.key) == (
        "pushgateway-ca",
        "ca.crt",
    )
    assert config.pushgateway_basic_auth_secret == "pushgateway-auth"
    assert config.monitoring.pushgateway_namespace == "monitoring"
    # the operator reads the mounted files it is told about
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert config.pushgateway_ca_file == mounts["pushgateway-ca"] + "/ca.crt"
    assert volumes["pushgateway-ca"]["secret"]["secretName"] == "pushgateway-ca"
    assert config.pushgateway_username_file == mounts["pushgateway-auth"] + "/username"
    assert config.pushgateway_password_file == mounts["pushgateway-auth"] + "/password"
    assert volumes["pushgateway-auth"]["secret"]["secretName"] == "pushgateway-auth"


def _images(docs: list[dict[str, Any]]) -> list[str]:
    images = []
    for deployment in by_kind(docs, "Deployment"):
        images += [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    env = operator_environment(docs, RELEASE_NAMESPACE)
    return [*images, env["TRACEROUTE_PROBE_IMAGE"]]


def test_private_registry_pins_every_image_by_digest() -> None:
    values_file = next(p for p in CI_VALUES if p.name == "private-registry-values.yaml")
    values = load_values(values_file)
    docs = render([values_file])
    images = _images(docs)
    assert len(images) == 3
    for image in images:
        assert image.startswith("registry.lab.internal:5000/"), image
        repository, digest = image.split("@")
        assert len(digest) == len("sha256:") + 64
        assert ":" not in repository.removeprefix("registry.lab.internal:5000/")
    for deployment in by_kind(docs, "Deployment"):
        assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    env = operator_environment(docs, RELEASE_NAMESPACE)
    assert env["TRACEROUTE_PROBE_IMAGE_PULL_SECRETS"] == ",".join(
        values["probe"]["imagePullSecrets"]
    )
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"


def test_default_images_follow_the_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    images = _images(render())
    assert images[-1].endswith(f"traceroute-probe:{chart['appVersion']}")
    assert any(i.endswith(f"traceroute-operator:{chart['appVersion']}") for i in images)


def _restricted(container: dict[str, Any]) -> bool:
    sc = container["securityContext"]
    return (
        sc["allowPrivilegeEscalation"] is False
        and sc["runAsNonRoot"] is True
        and sc["capabilities"]["drop"] == ["ALL"]
        and sc["seccompProfile"]["type"] == "RuntimeDefault"
        and sc["readOnlyRootFilesystem"] is True
    )


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_deployments_single_recreate_restricted_with_resources(values: Path) -> None:
    deployments = by_kind(render([values]), "Deployment")
    assert deployments
    for deployment in deployments:
        spec = deployment["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert _restricted(container)
            assert container["resources"]["requests"] and container["resources"]["limits"]
            assert "livenessProbe" in container


def _pushgateway_container(set_values: dict[str, str] | None = None) -> dict[str, Any]:
    deployment = one(render([], set_values), "Deployment", "-pushgateway")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_bundled_pushgateway_skips_the_consistency_check() -> None:
    """README "Benchmarks": with the check every PUT re-gathers all groups."""
    assert "--push.disable-consistency-check" in _pushgateway_container()["args"]


@pytest.mark.parametrize(
    ("probes", "request_mi"),
    [(None, 64), ("1", 33), ("1000", 157), ("5000", 657)],
)
def test_pushgateway_memory_follows_the_expected_probes(
    probes: str | None, request_mi: int
) -> None:
    """32Mi + 128Ki per probe group (rounded up to Mi), limit twice the request."""
    container = _pushgateway_container({"pushgateway.expectedProbes": probes} if probes else None)
    assert container["resources"] == {
        "requests": {"cpu": "20m", "memory": f"{request_mi}Mi"},
        "limits": {"memory": f"{2 * request_mi}Mi"},
    }


def test_pushgateway_resources_given_replace_the_derived_ones() -> None:
    container = _pushgateway_container(
        {"pushgateway.expectedProbes": "5000", "pushgateway.resources.limits.memory": "3Gi"}
    )
    assert container["resources"] == {
        "requests": {"cpu": "20m", "memory": "657Mi"},
        "limits": {"memory": "3Gi"},
    }


def test_bundled_shards_are_one_deployment_and_service_each_and_the_operators_shards() -> None:
    docs = render([], {"pushgateway.shards": "3", "pushgateway.expectedProbes": "9000"})
    deployments = [d for d in by_kind(docs, "Deployment") if "-pushgateway" in d["metadata"]["name"]]
    services = [d for d in by_kind(docs, "Service") if "-pushgateway" in d["metadata"]["name"]]
    names = [f"trop-traceroute-operator-pushgateway-{i}" for i in range(3)]
    assert sorted(d["metadata"]["name"] for d in deployments) == names
    assert sorted(s["metadata"]["name"] for s in services) == names
    config = OperatorConfig.from_env(operator_environment(docs, RELEASE_NAMESPACE))
    assert config.pushgateway_shards == tuple(
        f"http://{n}.{RELEASE_NAMESPACE}.svc:9091" for n in names
    )
    selector = set(config.monitoring.pushgateway_selector.items())
    for deployment in deployments:
        # each Service reaches only its own shard's pod ...
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        service = one(services, "Service", deployment["metadata"]["name"])
        assert set(service["spec"]["selector"].items()) <= set(pod_labels.items())
        assert set(deployment["spec"]["selector"]["matchLabels"].items()) == set(
            service["spec"]["selector"].items()
        )
        # ... and the one generated ServiceMonitor selects every shard's Service
        assert selector <= set(service["metadata"]["labels"].items())
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        # each sized for its third of the probes: 32Mi + 3000/8
        assert container["resources"]["requests"]["memory"] == "407Mi"
    others = {s["spec"]["selector"]["traceroute.dev/pushgateway-shard"] for s in services}
    assert others == {"0", "1", "2"}


def test_one_shard_renders_as_before_without_a_shard_label() -> None:
    docs = render([], {})
    deployment = one(docs, "Deployment", "-pushgateway")
    assert deployment["metadata"]["name"] == "trop-traceroute-operator-pushgateway"
    assert "traceroute.dev/pushgateway-shard" not in deployment["spec"]["selector"]["matchLabels"]
    config = OperatorConfig.from_env(operator_environment(docs, RELEASE_NAMESPACE))
    assert config.pushgateway_shards == ()


def test_external_shard_urls_reach_the_operator() -> None:
    urls = ["https://pgw-a.monitoring.svc:9091", "https://pgw-b.monitoring.svc:9091"]
    docs = render(
        [],
        {
            "pushgateway.enabled": "false",
            "pushgateway.shardURLs": "{" + ",".join(urls) + "}",
        },
    )
    assert not [d for d in docs if "pushgateway" in d["metadata"]["name"]]
    config = OperatorConfig.from_env(operator_environment(docs, RELEASE_NAMESPACE))
    assert config.pushgateway_shards == tuple(urls)
    assert config.own_pushgateway_urls == tuple(urls)


def _rules(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def without_hooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The release's own objects (Helm hooks such as the uninstall Job are not)."""
    return [d for d in docs if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]


AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"


def _aggregated(role: dict[str, Any]) -> bool:
    """A ClusterRole for the built-in edit/view roles, not one the operator is bound to."""
    return any(key.startswith(AGGREGATE_TO) for key in role["metadata"].get("labels", {}))


def _operator_cluster_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's own ClusterRoles: not the aggregated ones, not the uninstall hook's."""
    return [r for r in by_kind(without_hooks(docs), "ClusterRole") if not _aggregated(r)]


def test_cluster_rbac_by_default() -> None:
    docs = without_hooks(render())
    (role,) = _operator_cluster_roles(docs)
    rules = _rules(role)
    assert ("batch", "cronjobs", "create") in rules
    assert ("traceroute.dev", "tracerouteprobes/status", "patch") in rules
    assert ("", "pods", "watch") in rules and ("", "pods", "delete") not in rules
    # no cluster-wide right to read Secrets (docs/security.md)
    assert not [rule for rule in rules if rule[1] == "secrets"]
    assert not any(verb in ("*", "escalate", "bind", "impersonate") for *_, verb in rules)
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": one(docs, "ServiceAccount")["metadata"]["name"],
            "namespace": RELEASE_NAMESPACE,
        }
    ]


def _operator_roles() -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in yaml.safe_load_all(RBAC_SOURCE.read_text()) if r}


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_chart_grants_exactly_the_operators_rules(values: Path) -> None:
    settings = load_values(values)
    monitoring = settings.get("monitoring", {})
    rules_off = not monitoring.get("prometheusRule", {}).get("enabled", True)
    expected = _operator_roles()
    docs = without_hooks(render([values]))
    roles = _operator_cluster_roles(docs) + by_kind(docs, "Role")
    for role in roles:
        name = role["metadata"]["name"]
        if name.endswith("-servicemonitors"):
            source = expected["traceroute-operator-servicemonitors"]
        elif name.endswith("-dashboards"):
            source = expected["traceroute-operator-dashboards"]
        else:
            source = expected["traceroute-operator-probes"]
        wanted = _rules(source)
        if rules_off:
            wanted = {r for r in wanted if r[1] != "prometheusrules"}
        assert _rules(role) == wanted, name
    kinds = {r["metadata"]["name"].rsplit("-", 1)[-1] for r in roles}
    assert ("servicemonitors" in kinds) == monitoring.get("serviceMonitor", {}).get("enabled", True)
    assert ("dashboards" in kinds) == monitoring.get("dashboards", {}).get("enabled", True)


def test_aggregated_roles_let_namespace_editors_manage_and_viewers_read_probes() -> None:
    docs = render()
    aggregated = {
        r["metadata"]["name"].rsplit("-", 1)[-1]: r
        for r in by_kind(docs, "ClusterRole")
        if _aggregated(r)
    }
    assert set(aggregated) == {"edit", "view"}
    edit, view = aggregated["edit"], aggregated["view"]
    assert edit["metadata"]["labels"][AGGREGATE_TO + "edit"] == "true"
    assert edit["metadata"]["labels"][AGGREGATE_TO + "admin"] == "true"
    assert view["metadata"]["labels"][AGGREGATE_TO + "view"] == "true"
    assert {k for k in edit["metadata"]["labels"] if k.startswith(AGGREGATE_TO)} == {
        AGGREGATE_TO + "edit",
        AGGREGATE_TO + "admin",
    }
    assert {k for k in view["metadata"]["labels"] if k.startswith(AGGREGATE_TO)} == {
        AGGREGATE_TO + "view"
    }
    probes = "tracerouteprobes"
    assert _rules(edit) == {
        ("traceroute.dev", probes, verb)
        for verb in (
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
            "get",
            "list",
            "watch",
        )
    }
    assert _rules(view) == {
        ("traceroute.dev", resource, verb)
        for resource in (probes, f"{probes}/status")
        for verb in ("get", "list", "watch")
    }
    # nobody gets the operator's rights through these roles
    assert not any(
        b["roleRef"]["name"] in {edit["metadata"]["name"], view["metadata"]["name"]}
        for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
    )


def test_aggregated_roles_can_be_turned_off() -> None:
    docs = render(set_values={"rbac.aggregateToDefaultRoles": "false"})
    assert not [r for r in by_kind(docs, "ClusterRole") if _aggregated(r)]
    assert len(_operator_cluster_roles(docs)) == 1


def test_namespaced_rbac_has_no_cluster_wide_permission() -> None:
    values_file = next(p for p in CI_VALUES if p.name == "namespaced-rbac-values.yaml")
    watched = load_values(values_file)["operator"]["watchNamespaces"]
    docs = render([values_file])
    assert by_kind(docs, "ClusterRole") == [] and by_kind(docs, "ClusterRoleBinding") == []
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    probe_roles = [
        r
        for (ns, _), r in roles.items()
        if ns in watched and ("batch", "cronjobs", "create") in _rules(r)
    ]
    assert sorted(r["metadata"]["namespace"] for r in probe_roles) == sorted(watched)
    bindings = by_kind(docs, "RoleBinding")
    for role in roles.values():
        assert any(
            b["metadata"]["namespace"] == role["metadata"]["namespace"]
            and b["roleRef"]["name"] == role["metadata"]["name"]
            for b in bindings
        )


def test_monitoring_off_asks_for_no_monitoring_permission_or_object() -> None:
    values_file = next(p for p in CI_VALUES if p.name == "monitoring-off-values.yaml")
    docs = render([values_file])
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        assert not any(group == "monitoring.coreos.com" for group, _, _ in _rules(role))
        assert not any(resource == "configmaps" for _, resource, _ in _rules(role))
    env = operator_environment(docs, RELEASE_NAMESPACE)
    mon = OperatorConfig.from_env(env).monitoring
    assert not (mon.servicemonitor_enabled or mon.prometheusrule_enabled or mon.dashboards_enabled)


def test_operator_metrics_monitors_carry_the_kube_prometheus_stack_labels() -> None:
    docs = render(
        set_values={
            "metrics.serviceMonitor.enabled": "true",
            "metrics.podMonitor.enabled": "true",
            "monitoring.additionalLabels.release": "kps",
        }
    )
    for kind in ("ServiceMonitor", "PodMonitor"):
        monitor = one(docs, kind)
        assert monitor["metadata"]["labels"]["release"] == "kps"
    service = one(docs, "Service", "-metrics")
    selector = one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert set(selector.items()) <= set(service["metadata"]["labels"].items())


def test_templated_crd_is_the_same_crd_and_kept_on_uninstall() -> None:
    docs = render(set_values={"crds.template": "true"})
    crd = one(docs, "CustomResourceDefinition")
    source = yaml.safe_load(CRD_SOURCE.read_text())
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    # without the option the CRD comes only from crds/, not from templates
    assert by_kind(render(), "CustomResourceDefinition") == []
    with_crds = render(include_crds=True)
    assert json.dumps(one(with_crds, "CustomResourceDefinition")["spec"], sort_keys=True) == (
        json.dumps(source["spec"], sort_keys=True)
    )


@pytest.mark.parametrize(
    ("set_values", "message"),
    [
        ({"operator.replicas": "2"}, "additional properties 'replicas' not allowed"),
        ({"pushgateway.persistence.sizee": "1Gi"}, "additional properties 'sizee' not allowed"),
        (
            {"operator.affinity.nodeAffinity.requiredDuringScheduling": "x"},
            "additional properties 'requiredDuringScheduling' not allowed",
        ),
        ({"operator.resources.request.cpu": "1"}, "additional properties 'request' not allowed"),
        ({"pushgateway.enabled": "false"}, "/pushgateway/url"),
        ({"pushgateway.expectedProbes": "0"}, "/pushgateway/expectedProbes"),
        ({"operator.image.digest": "sha256:abc"}, "/operator/image/digest"),
        ({"operator.watchNamespaces": "{Team_A}"}, "/operator/watchNamespaces/0"),
        ({"monitoring.prometheusRule.severities.NoSuchAlert": "warning"}, "NoSuchAlert"),
        ({"monitoring.additionalLabels.bad key": "x"}, "bad key"),
        (
            {"metrics.serviceMonitor.enabled": "true", "metrics.service.enabled": "false"},
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_them(
    set_values: dict[str, str], message: str
) -> None:
    assert message in render_error(set_values)


def test_notes_tell_the_next_step() -> None:
    result = helm_cmd(
        [
            "install",
            "trop",
            str(CHART),
            "--dry-run=client",
            "--namespace",
            RELEASE_NAMESPACE,
            "--set",
            "monitoring.additionalLabels.release=kps",
        ]
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert (
        "kubectl -n traceroute-system rollout status deployment/trop-traceroute-operator" in notes
    )
    assert "kind: TracerouteProbe" in notes and "kubectl get trp -A" in notes
    assert "release=kps" in notes


@pytest.mark.parametrize(
    ("kube_version", "accepted"),
    [("1.36.3", True), ("1.29.0", True), ("1.31.2-eks-1234", True), ("1.28.9", False)],
)
def test_kube_version_constraint(kube_version: str, accepted: bool) -> None:
    args = ["template", "trop", str(CHART), "--kube-version", kube_version]
    result = helm_cmd(args, check=False)
    assert (result.returncode == 0) == accepted, result.stderr
    if not accepted:
        assert "kubeVersion" in result.stderr or "incompatible" in result.stderr


def test_secrets_are_readable_only_in_the_listed_namespaces() -> None:
    assert not [d for d in render() if d["kind"] == "Role" and "secrets" in str(d["rules"])]
    docs = render(set_values={"rbac.secretNamespaces": "{team-a,team-b}"})
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-secrets")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert _rules(role) == {("", "secrets", "get")}
    bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"].endswith("-secrets")
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
        assert binding["subjects"][0]["namespace"] == RELEASE_NAMESPACE
    (role,) = _operator_cluster_roles(docs)
    assert not [r for r in _rules(role) if r[1] == "secrets"]


def test_trust_allowlists_reach_the_operator() -> None:
    docs = render(
        set_values={
            "pushgateway.allowedURLs": "{https://pgw.monitoring.svc:9091}",
            "probe.allowedImages": "{registry.example/probes/,registry.example/x}",
        }
    )
    env = operator_environment(docs, RELEASE_NAMESPACE)
    assert env["TRACEROUTE_ALLOWED_PUSHGATEWAY_URLS"] == "https://pgw.monitoring.svc:9091"
    assert env["TRACEROUTE_ALLOWED_PROBE_IMAGES"] == "registry.example/probes/,registry.example/x"
    assert OperatorConfig.from_env(env).allowed_probe_images == (
        "registry.example/probes/",
        "registry.example/x",
    )


def test_one_existing_claim_cannot_serve_several_shards() -> None:
    error = render_error(
        {
            "pushgateway.shards": "2",
            "pushgateway.persistence.enabled": "true",
            "pushgateway.persistence.existingClaim": "pgw-data",
        }
    )
    assert "existingClaim" in error and "pushgateway.shards" in error


def _hooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]


def test_uninstall_hook_deletes_the_probes_with_nothing_but_that_permission() -> None:
    hooks = _hooks(render())
    assert {d["kind"] for d in hooks} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Job",
    }
    for doc in hooks:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    (role,) = by_kind(hooks, "ClusterRole")
    assert _rules(role) == {
        ("traceroute.dev", "tracerouteprobes", verb) for verb in ("get", "list", "delete")
    }
    (job,) = by_kind(hooks, "Job")
    weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in hooks}
    # the ServiceAccount and its permission exist before the Job starts
    assert weights["ServiceAccount"] < weights["ClusterRoleBinding"] < weights["Job"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["uninstall", "--timeout", "240"]
    assert job["spec"]["activeDeadlineSeconds"] == 300
    assert pod["serviceAccountName"] == one(hooks, "ServiceAccount")["metadata"]["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"] == (
        operator_deployment(render())["spec"]["template"]["spec"]["containers"][0]["image"]
    )


def test_uninstall_hook_of_a_namespaced_release_has_a_role_per_watched_namespace() -> None:
    values_file = next(p for p in CI_VALUES if p.name == "namespaced-rbac-values.yaml")
    watched = load_values(values_file)["operator"]["watchNamespaces"]
    hooks = _hooks(render([values_file]))
    assert by_kind(hooks, "ClusterRole") == []
    assert sorted(r["metadata"]["namespace"] for r in by_kind(hooks, "Role")) == sorted(watched)
    (job,) = by_kind(hooks, "Job")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRACEROUTE_WATCH_NAMESPACES"] == ",".join(watched)
    assert _hooks(render([values_file], {"uninstall.hook": "false"})) == []
