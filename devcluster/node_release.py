"""The chart as a user installs it on a cluster with real nodes (a DevCluster): every image
from the private registry with a pull Secret, the operator as its Deployment's pod.

Used by the demo; the values are those of docs/install.md ("Your own registry") plus what
this cluster lacks: no cluster DNS, so the Pushgateway is the DevCluster's, by address.
"""

from __future__ import annotations

from typing import Any

from devcluster.cluster import DevCluster
from devcluster.kubetools import (
    RESTRICTED_LABELS,
    KubeError,
    KubeRest,
    ensure_namespace,
    wait_default_service_account,
)
from devcluster.stack import OPERATOR_SELECTOR


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
