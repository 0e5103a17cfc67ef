"""The chart as a user installs it on a cluster with real nodes (a DevCluster): every image
from the private registry with a pull Secret, the operator as its Deployment's pod.

Used by the demo and the chart's cluster tests. The values are those of docs/install.md
("Build the images yourself and run them from your own registry") plus what this cluster
lacks: no cluster DNS, so the Pushgateway is the DevCluster's, by address.
"""

from __future__ import annotations

from typing import Any

from devcluster.chart import operator_deployment
from devcluster.cluster import DevCluster
from devcluster.kubetools import (
    RESTRICTED_LABELS,
    KubeError,
    KubeRest,
    ensure_namespace,
    kubectl,
    wait_default_service_account,
)
from devcluster.runtime import wait_until
from devcluster.stack import OPERATOR_SELECTOR, Release


def chart_values(dev: DevCluster, pull_secret: str) -> list[str]:
    """`helm install` arguments: images from `dev`'s registry at the checkout's tag, pulled
    with `pull_secret` by the operator and (the operator's default) by its probe pods."""
    if dev.registry is None or dev.built is None or dev.pushgateway is None:
        raise RuntimeError("the DevCluster is not started or built no images")
    tag = dev.built.tag
    return [
        *("--set", f"image.registry={dev.registry.host}"),
        *("--set", f"operator.image.tag={tag}", "--set", f"probe.image.tag={tag}"),
        *("--set", f"imagePullSecrets[0].name={pull_secret}"),
        *("--set", f"probe.imagePullSecrets[0]={pull_secret}"),
        # INFO logs (kopf's default is warnings only): kubectl logs has something to show
        *("--set", "operator.verbose=true"),
        *("--set", "pushgateway.enabled=false"),
        *("--set", f"pushgateway.url={dev.pushgateway.url}"),
    ]


def prepare_namespace(kube: KubeRest, dev: DevCluster, name: str, pull_secret: str) -> None:
    """A namespace with PodSecurity `restricted` enforced and the registry's pull Secret."""
    ensure_namespace(kube, name, RESTRICTED_LABELS)
    wait_default_service_account(kube, name)
    try:
        kube.post(f"/api/v1/namespaces/{name}/secrets", dev.pull_secret(pull_secret))
    except KubeError as exc:
        if exc.status != 409:
            raise


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions", [])
    )


def ready_operator_pod(kube: KubeRest, namespace: str) -> dict[str, Any] | None:
    pods = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=OPERATOR_SELECTOR)
    ready = [p for p in pods["items"] if is_ready(p)]
    return ready[0] if ready else None


# what the pod's own loopback answers, read from inside the operator container (the host
# does not reach pod addresses: they are in the lab)
_FETCH = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


class NodeOperator:
    """The operator of an installed release as its Deployment's pod on a real node: the same
    checks the pod-runner `stack.OperatorPod` offers (serving, scale, logs)."""

    def __init__(self, release: Release, kube: KubeRest) -> None:
        self.release = release
        self.kube = kube

    @property
    def deployment_path(self) -> str:
        name = operator_deployment(self.release.manifest())["metadata"]["name"]
        return f"/apis/apps/v1/namespaces/{self.release.namespace}/deployments/{name}"

    def running_pods(self) -> list[dict[str, Any]]:
        pods = self.kube.get(
            f"/api/v1/namespaces/{self.release.namespace}/pods", labelSelector=OPERATOR_SELECTOR
        )["items"]
        return [p for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")]

    def exec_get(self, pod: str, port: int, path: str) -> str:
        url = f"http://127.0.0.1:{port}{path}"
        return kubectl(
            ["-n", self.release.namespace, "exec", pod, "--", "python3", "-c", _FETCH, url],
            kubeconfig=self.release.cluster.kubeconfig,
        ).stdout

    def wait_serving(self, timeout: float = 180.0) -> None:
        """One operator pod Ready, its liveness and metrics endpoints answering in the pod."""
        (pod,) = wait_until(
            lambda: pods if len(pods := self.running_pods()) == 1 else None,
            timeout=timeout,
            what="one operator pod Ready",
        )
        name = pod["metadata"]["name"]
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        try:
            wait_until(
                lambda: self.exec_get(name, ports["healthz"], "/healthz") is not None,
                timeout=60,
                what=f"operator liveness in {name}",
            )
        except TimeoutError:
            print(self.logs())
            raise
        assert "traceroute_operator_reconciles_total" in self.exec_get(
            name, ports["metrics"], "/metrics"
        )

    def scale(self, replicas: int) -> None:
        self.kube.merge_patch(self.deployment_path, {"spec": {"replicas": replicas}})
        if replicas == 0:
            wait_until(lambda: not self.all_pods(), timeout=90, what="operator pods gone")
        else:
            self.wait_serving()

    def all_pods(self) -> list[dict[str, Any]]:
        return list(
            self.kube.get(
                f"/api/v1/namespaces/{self.release.namespace}/pods",
                labelSelector=OPERATOR_SELECTOR,
            )["items"]
        )

    def logs(self) -> str:
        return kubectl(
            ["-n", self.release.namespace, "logs", "-l", OPERATOR_SELECTOR, "--tail=100"],
            kubeconfig=self.release.cluster.kubeconfig,
            check=False,
        ).stdout
