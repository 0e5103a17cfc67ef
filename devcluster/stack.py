"""The chart on the real control plane, shared by the chart tests and the demo.

A cluster "with kube-prometheus-stack" (the prometheus-operator CRDs) plus the
TracerouteProbe CRD; a Helm release of charts/traceroute-operator; and the operator as
that release runs it: Deployment -> ReplicaSet -> Pod, the pod started by a pod runner
in the host network namespace (the apiserver is on loopback) with the chart's env,
securityContext, ServiceAccount token and RBAC.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devcluster import monitoring_crds
from devcluster.chart import operator_deployment
from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeRest, apply_crds, helm
from devcluster.paths import CRD_SOURCE
from devcluster.podrunner import PodRunner
from devcluster.runtime import free_port, local_session, wait_until

PROBE_CRD = "tracerouteprobes.traceroute.dev"
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"


def crd_established(kube: KubeRest, name: str) -> bool:
    crd = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    return any(
        c["type"] == "Established" and c["status"] == "True"
        for c in crd.get("status", {}).get("conditions", [])
    )


def install_crds(cluster: ControlPlane) -> None:
    """The prometheus-operator CRDs and the TracerouteProbe CRD (what a cluster with
    kube-prometheus-stack has after the chart's first install), served when this returns."""
    apply_crds(
        cluster.kubeconfig,
        [*monitoring_crds.crd_files(), CRD_SOURCE],
        field_manager="chart-tests",
        timeout_seconds=30,
    )


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


@dataclass(frozen=True)
class OperatorPorts:
    """Free ports for the operator's liveness and metrics endpoints: the pod runs in the
    host's network namespace, where other operators (other tests) may listen too."""

    liveness: int
    metrics: int

    @classmethod
    def free(cls) -> OperatorPorts:
        return cls(free_port(), free_port())

    def helm_args(self, pushgateway_url: str) -> list[str]:
        """Values that differ from a cluster: no cluster DNS, so the Pushgateway is an
        external URL (the session's); the ports above."""
        return [
            "--set",
            "pushgateway.enabled=false",
            "--set",
            f"pushgateway.url={pushgateway_url}",
            "--set",
            f"operator.livenessPort={self.liveness}",
            "--set",
            f"metrics.port={self.metrics}",
        ]


@dataclass
class OperatorPod:
    """The operator as the installed chart runs it: Deployment -> ReplicaSet -> Pod, the pod
    started by the pod runner with the chart's env, securityContext and volumes, and the
    ServiceAccount token the apiserver projects into it (in-cluster config)."""

    release: Release
    runner: PodRunner
    liveness_port: int
    metrics_port: int

    @property
    def deployment_path(self) -> str:
        name = operator_deployment(self.release.manifest())["metadata"]["name"]
        return f"/apis/apps/v1/namespaces/{self.release.namespace}/deployments/{name}"

    def running_pods(self, kube: KubeRest) -> list[dict[str, Any]]:
        pods = kube.get(
            f"/api/v1/namespaces/{self.release.namespace}/pods", labelSelector=OPERATOR_SELECTOR
        )["items"]
        return [
            p
            for p in pods
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]

    def logs(self) -> str:
        assert self.runner.rundir is not None
        return "\n".join(
            path.read_text(errors="replace")[-3000:]
            for path in sorted(self.runner.rundir.path.rglob("output.log"))
        )

    def wait_serving(self, kube: KubeRest) -> None:
        """One operator pod running, its liveness endpoint answering where the kubelet asks."""
        wait_until(lambda: len(self.running_pods(kube)) == 1, timeout=60, what="operator pod")
        session = local_session()
        healthz = f"http://127.0.0.1:{self.liveness_port}/healthz"
        try:
            wait_until(
                lambda: session.get(healthz, timeout=2).status_code == 200,
                timeout=60,
                what=f"operator liveness {healthz}",
            )
        except TimeoutError:
            print(self.logs())
            raise
        metrics = session.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        assert "traceroute_operator_reconciles_total" in metrics.text

    def scale(self, kube: KubeRest, replicas: int) -> None:
        kube.merge_patch(self.deployment_path, {"spec": {"replicas": replicas}})
        if replicas == 0:
            wait_until(lambda: not self.running_pods(kube), timeout=60, what="operator gone")
        else:
            self.wait_serving(kube)


def is_operator_pod(pod: dict[str, Any]) -> bool:
    key, _, value = OPERATOR_SELECTOR.partition("=")
    return bool((pod["metadata"].get("labels") or {}).get(key) == value)


def serve_operator(
    kube: KubeRest, release: Release, ports: OperatorPorts, runner: PodRunner
) -> OperatorPod:
    """The release's operator pod, run by `runner` (which must put it in HOST_NETNS),
    once it serves liveness and metrics."""
    operator = OperatorPod(release, runner, ports.liveness, ports.metrics)
    operator.wait_serving(kube)
    return operator
