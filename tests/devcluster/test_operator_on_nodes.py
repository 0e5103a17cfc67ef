"""The chart on real nodes: the operator runs as the chart's Deployment from the image built
from operator/Dockerfile, pulled from the private registry with the chart's
`imagePullSecrets`; its probe pods run the probe image with the operator's default pull
secrets; the result of a run comes back into the TracerouteProbe's status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devcluster.cluster import DevCluster
from devcluster.images import push
from devcluster.kubetools import (
    RESTRICTED_LABELS,
    KubeRest,
    ensure_namespace,
    helm,
    kubectl,
    wait_default_service_account,
)
from devcluster.operator_process import create_job_from_cronjob
from devcluster.paths import CHART
from devcluster.runtime import wait_until
from devcluster.stack import OPERATOR_SELECTOR, install_crds
from tests.fixtures import nodes as node_fixtures

# this module's `kube` is the real-node cluster's, not the session control plane's
kube = node_fixtures.kube

pytestmark = pytest.mark.slow

RELEASE = "trop"
RELEASE_NAMESPACE = "traceroute-system"
PULL_SECRET = "regcred"
PROBE = "to-target"


@pytest.fixture(scope="module")
def release(dev_cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The chart installed with every image from the private registry; yields the namespace
    for TracerouteProbes (with the pull Secret the probe pods use)."""
    assert dev_cluster.built is not None and dev_cluster.registry is not None
    assert dev_cluster.control_plane is not None and dev_cluster.pushgateway is not None
    push(dev_cluster.built, "traceroute-operator", dev_cluster.registry)
    install_crds(dev_cluster.control_plane)
    home = tmp_path_factory.mktemp("helm")
    probes = "probes"
    with KubeRest(dev_cluster.kubeconfig) as kube:
        for namespace in (RELEASE_NAMESPACE, probes):
            ensure_namespace(kube, namespace, RESTRICTED_LABELS)
            wait_default_service_account(kube, namespace)
            kube.post(
                f"/api/v1/namespaces/{namespace}/secrets", dev_cluster.pull_secret(PULL_SECRET)
            )
    tag = dev_cluster.built.tag
    helm(
        [
            *("install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--skip-crds"),
            *("--set", f"image.registry={dev_cluster.registry.host}"),
            *("--set", f"operator.image.tag={tag}", "--set", f"probe.image.tag={tag}"),
            *("--set", f"imagePullSecrets[0].name={PULL_SECRET}"),
            *("--set", f"probe.imagePullSecrets[0]={PULL_SECRET}"),
            # INFO logs (kopf's default is warnings only): kubectl logs has something to show
            *("--set", "operator.verbose=true"),
            # no cluster DNS here: the Pushgateway is the session's, by address
            *("--set", "pushgateway.enabled=false"),
            *("--set", f"pushgateway.url={dev_cluster.pushgateway.url}"),
        ],
        kubeconfig=dev_cluster.kubeconfig,
        home=home,
    )
    try:
        yield probes
    finally:
        helm(
            ["uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout=60s"],
            kubeconfig=dev_cluster.kubeconfig,
            home=home,
            check=False,
        )


def operator_pod(kube: KubeRest) -> dict[str, Any] | None:
    pods = kube.get(
        f"/api/v1/namespaces/{RELEASE_NAMESPACE}/pods", labelSelector=OPERATOR_SELECTOR
    )["items"]
    ready = [
        p
        for p in pods
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]
    return ready[0] if ready else None


def test_operator_image_runs_the_probe_on_a_node(
    dev_cluster: DevCluster, kube: KubeRest, release: str
) -> None:
    assert dev_cluster.registry is not None and dev_cluster.built is not None
    pod = wait_until(lambda: operator_pod(kube), timeout=180, what="operator pod Ready")
    container = pod["status"]["containerStatuses"][0]
    assert container["image"] == (
        f"{dev_cluster.registry.host}/traceroute-operator/traceroute-operator:"
        f"{dev_cluster.built.tag}"
    )
    assert pod["spec"]["nodeName"] in {n.name for n in dev_cluster.nodes}

    def started() -> str | None:
        # Ready comes before the interpreter is through its imports: wait for the line
        logs = kubectl(
            ["logs", "-n", RELEASE_NAMESPACE, pod["metadata"]["name"]],
            kubeconfig=dev_cluster.kubeconfig,
        ).stdout
        return logs if "traceroute-operator started" in logs else None

    wait_until(started, timeout=60, what="the operator's start-up line in kubectl logs")

    node = dev_cluster.nodes[0]
    probe = {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "metadata": {"name": PROBE, "namespace": release},
        "spec": {
            "targets": [dev_cluster.target_address()],
            "protocol": "icmp",
            "flows": 1,
            "probesPerHop": 3,
            "schedule": "0 0 1 1 *",
            "nodeSelector": {"kubernetes.io/hostname": node.name},
        },
    }
    probe_path = f"/apis/traceroute.dev/v1alpha1/namespaces/{release}/tracerouteprobes/{PROBE}"
    kube.post(f"/apis/traceroute.dev/v1alpha1/namespaces/{release}/tracerouteprobes", probe)
    cronjob = wait_until(
        lambda: (kube.get(probe_path).get("status") or {}).get("cronJobName"),
        timeout=60,
        what="the probe's CronJob",
    )
    create_job_from_cronjob(kube, release, cronjob, "run-now")

    def result() -> dict[str, Any] | None:
        status = kube.get(probe_path).get("status") or {}
        return status if (status.get("lastRun") or {}).get("jobName") == "run-now" else None

    status = wait_until(result, timeout=180, what="the run's result in the probe's status")
    assert status["lastRun"]["exitCode"] == 0, status
    (target,) = status["targets"]
    assert target["reached"] is True
    assert target["path"] == [[hop] for hop in dev_cluster.trace_truth(node)], status
    pods = kube.get(f"/api/v1/namespaces/{release}/pods", labelSelector="job-name=run-now")
    (probe_pod,) = pods["items"]
    assert probe_pod["spec"]["nodeName"] == node.name
    assert probe_pod["spec"]["imagePullSecrets"] == [{"name": PULL_SECRET}]
    assert probe_pod["status"]["containerStatuses"][0]["image"] == dev_cluster.image(
        "traceroute-probe"
    )
