"""The pod runner does what a kubelet does with a pod, checked from inside the pod and
through the API status the Job controller reads."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from devcluster.kubetools import KubeRest
from devcluster.podrunner import HOST_NETNS, PodRunner
from devcluster.podrunner.runner import (
    is_unscheduled,
    node_object,
    node_ready_status,
    unschedulable_status,
)
from devcluster.runtime import wait_until

RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


# --- pure parts -------------------------------------------------------------------------------


def test_only_unscheduled_pending_pods_of_the_default_scheduler_are_taken() -> None:
    def pod(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
        return {"metadata": {}, "spec": spec, "status": status or {}}

    assert is_unscheduled(pod())
    assert is_unscheduled(pod({"phase": "Pending"}, schedulerName="default-scheduler"))
    assert not is_unscheduled(pod(nodeName="elsewhere"))
    assert not is_unscheduled(pod({"phase": "Running"}))
    assert not is_unscheduled(pod(schedulingGates=[{"name": "wait"}]))
    assert not is_unscheduled(pod(schedulerName="other"))


def test_a_pod_whose_node_selector_does_not_match_is_unschedulable() -> None:
    labels = node_object("podrunner-abc")["metadata"]["labels"]
    fits = {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}
    assert unschedulable_status(fits, labels, "T0") is None
    assert unschedulable_status({"spec": {}}, labels, "T0") is None
    refused = unschedulable_status({"spec": {"nodeSelector": {"zone": "mars"}}}, labels, "T0")
    assert refused is not None
    [scheduled] = refused["status"]["conditions"]
    assert (scheduled["type"], scheduled["status"], scheduled["reason"]) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )


def test_the_node_is_ready_and_labelled_as_the_pod_runner() -> None:
    node = node_object("podrunner-abc")
    assert node["metadata"] == {
        "name": "podrunner-abc",
        "labels": {
            "kubernetes.io/hostname": "podrunner-abc",
            "kubernetes.io/os": "linux",
            "traceroute-operator.test/pod-runner": "true",
        },
    }
    status = node_ready_status("podrunner-abc", "T0")["status"]
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["lastHeartbeatTime"]) == ("Ready", "True", "T0")
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]


# --- against the real control plane -----------------------------------------------------------


def _job(name: str, pod_spec: dict[str, Any], **job_spec: Any) -> dict[str, Any]:
    spec = {"backoffLimit": 0, "template": {"spec": pod_spec}}
    spec.update(job_spec)
    return {"metadata": {"name": name}, "spec": spec}


def _wait_job(kube: KubeRest, ns: str, name: str, timeout: float = 45) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job = kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")
        for cond in job.get("status", {}).get("conditions") or []:
            if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
                return job
        return None

    result: dict[str, Any] = wait_until(finished, timeout=timeout, what=f"Job {ns}/{name} done")
    return result


def _job_pod(kube: KubeRest, ns: str, job: str) -> dict[str, Any]:
    pods = kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"job-name={job}")["items"]
    assert len(pods) == 1, pods
    pod: dict[str, Any] = pods[0]
    return pod


INSPECT = r"""
import json, os, socket, sys
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return exc.strerror
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
report = {
    "argv": sys.argv[1:],
    "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
    "interfaces": [name for _, name in socket.if_nameindex()],
    "hostname": socket.gethostname(),
    "env": {k: os.environ.get(k) for k in ("GREETING", "FROM_SECRET", "CFG_MODE", "NS", "HOME")},
    "secret": open("/etc/creds/password").read(),
    "secret_write": attempt(lambda: open("/etc/creds/password", "w")),
    "root_write": attempt(lambda: open("/trop-should-not-exist", "w")),
    "scratch_write": attempt(lambda: open("/scratch/x", "w")),
    "has_sa_token": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
}
open(os.environ["MESSAGE_PATH"], "w").write(json.dumps(report))
print("x" * 10)
"""


@pytest.mark.slow
def test_pod_runs_as_specified_user_env_volumes_and_isolated_network(
    kube: KubeRest, k8s_namespace: str, pod_runner: PodRunner
) -> None:
    ns = k8s_namespace
    # a message path whose directory the host lacks: the runner must create the mount point
    # and remove it again
    message_dir = Path(f"/run/trop-smoke-{ns}")
    message_path = message_dir / "message"
    kube.post(
        f"/api/v1/namespaces/{ns}/secrets",
        {"metadata": {"name": "creds"}, "data": {"password": base64.b64encode(b"s3cr3t").decode()}},
    )
    kube.post(
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": "cfg"}, "data": {"MODE": "fast"}},
    )
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"fsGroup": 2000, "supplementalGroups": [3000]},
        "volumes": [
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o440}},
            {"name": "scratch", "emptyDir": {}},
        ],
        "containers": [
            {
                "name": "inspect",
                "image": "python",
                "command": ["python", "-c", INSPECT],
                "args": ["$(GREETING)", "$$(GREETING)"],
                "env": [
                    {"name": "GREETING", "value": "hello"},
                    {"name": "MESSAGE_PATH", "value": str(message_path)},
                    {
                        "name": "FROM_SECRET",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                    },
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                ],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "cfg"}}],
                "terminationMessagePath": str(message_path),
                "volumeMounts": [
                    {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
                "securityContext": {**RESTRICTED, "readOnlyRootFilesystem": True},
            }
        ],
    }
    kube.post(f"/apis/batch/v1/namespaces/{ns}/jobs", _job("inspect", pod_spec))
    job = _wait_job(kube, ns, "inspect")
    pod = _job_pod(kube, ns, "inspect")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0, terminated
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    report = json.loads(terminated["message"])
    assert report["argv"] == ["hello", "$(GREETING)"]
    assert (report["uid"], report["gid"]) == (65534, 65534)
    assert report["groups"] == [2000, 3000]
    assert report["cap_eff"] == report["cap_bnd"] == "0000000000000000"
    assert report["interfaces"] == ["lo"]  # own network namespace, nothing but loopback
    assert report["hostname"] == pod["metadata"]["name"]
    assert report["env"] == {
        "GREETING": "hello",
        "FROM_SECRET": "s3cr3t",
        "CFG_MODE": "fast",
        "NS": ns,
        "HOME": "/",
    }
    assert report["secret"] == "s3cr3t"  # group-readable through fsGroup
    assert report["secret_write"] == "Read-only file system"
    assert report["root_write"] == "Read-only file system"
    assert report["scratch_write"] == "ok"
    assert report["has_sa_token"] is False  # automountServiceAccountToken: false
    assert pod["status"]["phase"] == "Succeeded"
    assert not Path("/trop-should-not-exist").exists()
    # the host keeps no mount point the runner created for the pod
    pod_runner.stop()
    assert not Path("/etc/creds").exists()
    assert not message_dir.exists()


@pytest.mark.slow
def test_failed_container_reports_exit_code_and_log_tail(
    kube: KubeRest, k8s_namespace: str, pod_runner: PodRunner
) -> None:
    ns = k8s_namespace
    script = "import sys; print('\\n'.join(f'line {i}' for i in range(100))); sys.exit(3)"
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "fail",
                "image": "python",
                "command": ["python", "-c", script],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": RESTRICTED,
            }
        ],
    }
    kube.post(f"/apis/batch/v1/namespaces/{ns}/jobs", _job("fail", pod_spec))
    job = _wait_job(kube, ns, "fail")
    assert any(
        c["type"] == "Failed" and c["reason"] == "BackoffLimitExceeded"
        for c in job["status"]["conditions"]
    )
    pod = _job_pod(kube, ns, "fail")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    lines = terminated["message"].splitlines()
    assert lines[-1] == "line 99" and len(lines) == 80  # the kubelet's log fallback


@pytest.mark.slow
def test_job_deadline_kills_the_running_process(
    kube: KubeRest, k8s_namespace: str, pod_runner: PodRunner
) -> None:
    """The Job controller deletes the pod at the deadline; the runner kills the process and
    confirms the deletion like a kubelet (otherwise the pod would hang in Terminating)."""
    ns = k8s_namespace
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "sleep",
                "image": "python",
                "command": ["python", "-c", "import time; time.sleep(120)"],
                "securityContext": RESTRICTED,
            }
        ],
    }
    kube.post(
        f"/apis/batch/v1/namespaces/{ns}/jobs", _job("slow", pod_spec, activeDeadlineSeconds=3)
    )
    running = wait_until(
        lambda: next((r for r in pod_runner.runs.values() if r.phase == "Running"), None),
        timeout=20,
        what="pod running",
    )
    pids = _sleeping_pids()
    assert pids, "the pod's process is visible on the host"
    job = _wait_job(kube, ns, "slow", timeout=40)
    assert any(
        c["type"] == "Failed" and c["reason"] == "DeadlineExceeded"
        for c in job["status"]["conditions"]
    )
    wait_until(
        lambda: not kube.get(f"/api/v1/namespaces/{ns}/pods")["items"],
        timeout=30,
        what="pod deleted",
    )
    wait_until(running.done.is_set, timeout=10, what="runner finished the pod")
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _sleeping_pids() -> list[int]:
    """Pids of the test pod's process (the runner's launch chain execs into it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"time.sleep(120)" in cmdline:
            found.append(int(entry))
    return found


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


READ_SA = r"""
import json
base = "/var/run/secrets/kubernetes.io/serviceaccount/"
files = {name: open(base + name).read() for name in ("token", "namespace", "ca.crt")}
open("/dev/termination-log", "w").write(json.dumps(files))
"""


@pytest.mark.slow
def test_default_service_account_token_is_projected_and_valid(
    kube: KubeRest, k8s_namespace: str, pod_runner: PodRunner
) -> None:
    """Without automountServiceAccountToken: false, admission adds the kube-api-access
    volume; the runner fills it like the kubelet: a bound token, namespace and CA."""
    ns = k8s_namespace
    pod = {
        "metadata": {"name": "sa-reader"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "c",
                    "image": "python",
                    "command": ["python", "-c", READ_SA],
                    "securityContext": RESTRICTED,
                }
            ],
        },
    }
    created = kube.post(f"/api/v1/namespaces/{ns}/pods", pod)
    assert any(v["name"].startswith("kube-api-access") for v in created["spec"]["volumes"])
    pod_runner.wait_for_pod(ns, "sa-reader", timeout=30)
    status = kube.get(f"/api/v1/namespaces/{ns}/pods/sa-reader")["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0, terminated
    files = json.loads(terminated["message"])
    assert files["namespace"] == ns
    assert "BEGIN CERTIFICATE" in files["ca.crt"]
    review = kube.post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
         "spec": {"token": files["token"]}},
    )  # fmt: skip
    assert review["status"]["authenticated"] is True
    user = review["status"]["user"]
    assert user["username"] == f"system:serviceaccount:{ns}:default"
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["sa-reader"]


IN_CLUSTER = r"""
import json, os, ssl, urllib.error, urllib.request
base = "/var/run/secrets/kubernetes.io/serviceaccount/"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
namespace = open(base + "namespace").read()
request = urllib.request.Request(
    f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods",
    headers={"Authorization": "Bearer " + open(base + "token").read()},
)
context = ssl.create_default_context(cafile=base + "ca.crt")
try:
    urllib.request.urlopen(request, context=context, timeout=5)
    result = {"status": 200}
except urllib.error.HTTPError as exc:
    result = {"status": exc.code, "message": json.loads(exc.read())["message"]}
open("/dev/termination-log", "w").write(json.dumps(result))
"""


@pytest.mark.slow
def test_deployment_pod_talks_to_the_apiserver_in_cluster_and_restarts(
    kube: KubeRest, k8s_namespace: str, pod_runner_factory: Any
) -> None:
    """Deployment -> ReplicaSet -> Pod, run in the host network: the in-cluster config
    (injected KUBERNETES_SERVICE_* + projected token) reaches the real apiserver, whose RBAC
    denies the `default` ServiceAccount; restartPolicy Always restarts the container."""
    ns = k8s_namespace
    pod_runner_factory(namespace=ns, netns_for_pod=lambda pod: HOST_NETNS)
    deployment = {
        "metadata": {"name": "incluster"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "incluster"}},
            "template": {
                "metadata": {"labels": {"app": "incluster"}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "python",
                            "command": ["python", "-c", IN_CLUSTER],
                            "securityContext": RESTRICTED,
                        }
                    ]
                },
            },
        },
    }
    kube.post(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)

    def restarted() -> dict[str, Any] | None:
        for pod in kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector="app=incluster")[
            "items"
        ]:
            for status in pod.get("status", {}).get("containerStatuses") or []:
                if status["restartCount"] >= 1 and "terminated" in status.get("lastState", {}):
                    result: dict[str, Any] = status
                    return result
        return None

    status = wait_until(restarted, timeout=45, what="a restarted deployment pod")
    last = status["lastState"]["terminated"]
    assert last["exitCode"] == 0
    result = json.loads(last["message"])
    assert result["status"] == 403
    assert f"system:serviceaccount:{ns}:default" in result["message"]
    # deleting the Deployment cascades (GC) down to the running pod, which the runner kills
    kube.delete(f"/apis/apps/v1/namespaces/{ns}/deployments/incluster")
    wait_until(
        lambda: not kube.get(f"/api/v1/namespaces/{ns}/pods")["items"],
        timeout=45,
        what="deployment pods gone",
    )
