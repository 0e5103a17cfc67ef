"""The operator as a real process against the real control plane, with its own RBAC.

`OperatorProcess` runs `traceroute-operator run` (the console script a container would
run) with a ServiceAccount token kubeconfig whose only permissions are the ClusterRoles of
operator/traceroute_operator/data/rbac.yaml, bound the way the chart binds them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeError, KubeRest, apply_crds, ensure_namespace
from devcluster.paths import CRD_SOURCE, RBAC_SOURCE
from devcluster.runtime import (
    VENV_BIN,
    RuntimeDir,
    free_port,
    http_ok,
    local_session,
    process_cpu_seconds,
    process_status_kib,
    wait_until,
)

PROBES = "/apis/traceroute.dev/v1alpha1"
SERVICE_ACCOUNT = "traceroute-operator"


def install_crd(kubeconfig: Path) -> None:
    apply_crds(kubeconfig, [CRD_SOURCE])


def install_cluster_roles(kube: KubeRest) -> list[str]:
    names = []
    for role in yaml.safe_load_all(RBAC_SOURCE.read_text()):
        name = role["metadata"]["name"]
        kube.request(
            "PATCH",
            f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
            body=role,
            params={"fieldManager": "trop-tests", "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        names.append(name)
    return names


def bind(kube: KubeRest, namespace: str, role: str, sa_namespace: str) -> None:
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": role, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": sa_namespace}
        ],
    }
    kube.request(
        "PATCH",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{role}",
        body=body,
        params={"fieldManager": "trop-tests", "force": "true"},
        content_type="application/apply-patch+yaml",
    )


class OperatorProcess:
    """`traceroute-operator run` for some namespaces, restartable, killable."""

    def __init__(
        self,
        control_plane: ControlPlane,
        kube: KubeRest,
        *,
        namespaces: Sequence[str],
        operator_namespace: str,
        pushgateway_url: str,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        secret_namespaces: Sequence[str] = (),
    ) -> None:
        self.control_plane = control_plane
        # where the chart's rbac.secretNamespaces would let it read Secrets
        self.secret_namespaces = list(secret_namespaces)
        self.kube = kube
        self.namespaces = list(namespaces)
        self.operator_namespace = operator_namespace
        self.pushgateway_url = pushgateway_url
        self.log_dir = log_dir
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.rundir: RuntimeDir | None = None
        self.metrics_port = 0
        self.liveness_port = 0
        self.starts = 0

    def setup_rbac(self) -> Path:
        ensure_namespace(self.kube, self.operator_namespace)
        self.control_plane.ensure_service_account(self.operator_namespace, SERVICE_ACCOUNT)
        install_cluster_roles(self.kube)
        for namespace in self.namespaces:
            bind(self.kube, namespace, "traceroute-operator-probes", self.operator_namespace)
        for namespace in self.secret_namespaces:
            bind(self.kube, namespace, "traceroute-operator-secrets", self.operator_namespace)
        for role in ("traceroute-operator-servicemonitors", "traceroute-operator-dashboards"):
            bind(self.kube, self.operator_namespace, role, self.operator_namespace)
        return self.control_plane.service_account_kubeconfig(
            self.operator_namespace,
            SERVICE_ACCOUNT,
            path=self.log_dir / "operator.kubeconfig",
        )

    def environment(self, kubeconfig: Path) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "HOME": str(self.log_dir),
            "KUBECONFIG": str(kubeconfig),
            "TRACEROUTE_WATCH_NAMESPACES": ",".join(self.namespaces),
            "TRACEROUTE_OPERATOR_NAMESPACE": self.operator_namespace,
            "TRACEROUTE_DASHBOARDS_NAMESPACE": self.operator_namespace,
            "TRACEROUTE_PUSHGATEWAY_URL": self.pushgateway_url,
            # the pod runner maps the image's basename to the venv's console script
            "TRACEROUTE_PROBE_IMAGE": "registry.test/traceroute-probe:dev",
            "TRACEROUTE_METRICS_PORT": str(self.metrics_port),
            "TRACEROUTE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.liveness_port}/healthz",
            # tests start runs by hand and wait for them: no stagger delay unless asked for
            "TRACEROUTE_PROBE_START_DELAY_MAX_SECONDS": "0",
        }
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> OperatorProcess:
        if self.starts == 0:
            self.kubeconfig = self.setup_rbac()
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.starts += 1
        if self.rundir is None:
            # pidfiles + owner record: cleanup_stale() kills an operator a SIGKILLed test
            # run left behind, and the operator dies with this process (pdeathsig)
            self.rundir = RuntimeDir("operator", owner_pid=os.getpid())
        self.proc = self.rundir.spawn(
            self.process_name,
            [str(VENV_BIN / "traceroute-operator"), "run"],
            env=self.environment(self.kubeconfig),
        )
        if wait:
            wait_until(self.alive, timeout=60, what="operator liveness endpoint")
        return self

    @property
    def process_name(self) -> str:
        return f"operator-{self.starts}"

    @property
    def log_path(self) -> Path:
        if self.rundir is not None:
            return self.rundir.log_path(self.process_name)
        return self.log_dir / f"{self.process_name}.log"

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited: {self.log_tail()}")
        return http_ok(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2)

    def metrics(self) -> str:
        with local_session() as session:
            return session.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                series, _, value = line.rpartition(" ")
                if all(f'{k}="{v}"' in series for k, v in labels.items()):
                    total += float(value)
        return total

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as an OOM kill or node loss would do."""
        if self.proc is not None and self.proc.poll() is None:
            # setpriv execs the operator: the spawned pid is the operator's process group
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 15 s; the logs move to log_dir, the runtime dir goes."""
        if self.rundir is None:
            return
        self.rundir.stop(grace_seconds=15)
        for log in self.rundir.path.glob("operator-*.log"):
            shutil.copyfile(log, self.log_dir / log.name)
        self.rundir.remove()
        self.rundir = None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def rss_peak_kib(self) -> int:
        assert self.proc is not None
        return process_status_kib(self.proc.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return process_cpu_seconds(self.proc.pid)


def probe_manifest(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def probe_path(namespace: str, name: str | None = None) -> str:
    path = f"{PROBES}/namespaces/{namespace}/tracerouteprobes"
    return f"{path}/{name}" if name else path


def get_probe(kube: KubeRest, namespace: str, name: str) -> dict[str, Any] | None:
    return get_or_none(kube, probe_path(namespace, name))


def get_or_none(kube: KubeRest, path: str) -> dict[str, Any] | None:
    try:
        return kube.get(path)
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise


def condition(obj: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any]:
    for entry in ((obj or {}).get("status") or {}).get("conditions") or []:
        if entry.get("type") == type_:
            return dict(entry)
    return {}


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Ready=True for the object's current generation (status not from an older spec)."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return condition(obj, "Ready").get("status") == "True"


def wait_ready(kube: KubeRest, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        probe = get_probe(kube, namespace, name)
        return probe if probe is not None and is_ready(probe) else None

    result: dict[str, Any] = wait_until(ready, timeout=timeout, what=f"{namespace}/{name} Ready")
    return result


def create_job_from_cronjob(
    kube: KubeRest, namespace: str, cronjob: str, job: str
) -> dict[str, Any]:
    """What `kubectl create job --from=cronjob/<cronjob>` does: a Job from the jobTemplate.

    Saves waiting for cron minutes; the Job controller, the pod, the pod runner and the
    operator's result path are exactly those of a scheduled run.
    """
    source = kube.get(f"/apis/batch/v1/namespaces/{namespace}/cronjobs/{cronjob}")
    template = source["spec"]["jobTemplate"]
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job,
            "namespace": namespace,
            "labels": dict(template.get("metadata", {}).get("labels") or {}),
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cronjob,
                    "uid": source["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    return kube.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", body)


def events_for(
    kube: KubeRest, namespace: str, name: str, reason: str | None = None
) -> list[dict[str, Any]]:
    items = kube.get(
        f"/api/v1/namespaces/{namespace}/events",
        fieldSelector=f"involvedObject.name={name},involvedObject.kind=TracerouteProbe",
    ).get("items", [])
    return [e for e in items if reason is None or e.get("reason") == reason]
