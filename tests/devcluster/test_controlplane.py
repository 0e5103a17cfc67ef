"""Smoke tests of the real control plane: version, CRDs, RBAC with ServiceAccount tokens,
PodSecurity admission, garbage collection, and CronJob -> Job -> Pod through the pod runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.controlplane import K8S_VERSION, ControlPlane
from devcluster.kubetools import KubeError, KubeRest, kubectl
from devcluster.podrunner import PodRunner
from devcluster.runtime import wait_until

pytestmark = pytest.mark.slow

RESTRICTED_CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_version_is_the_built_release(control_plane: ControlPlane) -> None:
    version = control_plane.version()
    assert version["gitVersion"] == K8S_VERSION
    assert (version["major"], version["minor"]) == ("1", K8S_VERSION.split(".")[1])
    # kubectl (from the npm layer) talks to it with the admin kubeconfig
    out = kubectl(["version", "-o", "json"], kubeconfig=control_plane.kubeconfig).stdout
    assert json.loads(out)["serverVersion"]["gitVersion"] == K8S_VERSION


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.trop.test"},
    "spec": {
        "group": "smoke.trop.test",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10}
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_is_served_and_validates_custom_resources(
    control_plane: ControlPlane, kube: KubeRest, k8s_namespace: str, tmp_path: Path
) -> None:
    crd_file = tmp_path / "crd.yaml"
    crd_file.write_text(yaml.safe_dump(WIDGET_CRD))
    kubectl(["apply", "-f", str(crd_file)], kubeconfig=control_plane.kubeconfig)
    kubectl(
        ["wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.smoke.trop.test"],
        kubeconfig=control_plane.kubeconfig,
    )
    widgets = f"/apis/smoke.trop.test/v1/namespaces/{k8s_namespace}/widgets"
    widget = {
        "apiVersion": "smoke.trop.test/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    created = kube.post(widgets, widget)
    assert created["metadata"]["generation"] == 1
    assert kube.get(f"{widgets}/w1")["spec"] == {"size": 3}
    # the status subresource is separate: a status write does not bump the generation
    kube.merge_patch(f"{widgets}/w1/status", {"status": {"seen": True}})
    read = kube.get(f"{widgets}/w1")
    assert read["status"] == {"seen": True}
    assert read["metadata"]["generation"] == 1
    # and a spec write through the status subresource is ignored
    kube.merge_patch(f"{widgets}/w1/status", {"spec": {"size": 4}})
    assert kube.get(f"{widgets}/w1")["spec"] == {"size": 3}
    # structural schema validation is real
    with pytest.raises(KubeError) as excinfo:
        kube.post(widgets, dict(widget, metadata={"name": "w2"}, spec={"size": 99}))
    assert excinfo.value.status == 422
    assert "spec.size" in excinfo.value.body


def test_pod_security_admission_rejects_privileged_pods(kube: KubeRest, k8s_namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {"name": "c", "image": "python", "securityContext": {"privileged": True}}
            ]
        },
    }
    with pytest.raises(KubeError) as excinfo:
        kube.post(f"/api/v1/namespaces/{k8s_namespace}/pods", pod)
    assert excinfo.value.status == 403
    assert "violates PodSecurity" in excinfo.value.body


def test_service_account_kubeconfig_has_exactly_its_rbac(
    control_plane: ControlPlane, kube: KubeRest, k8s_namespace: str
) -> None:
    control_plane.ensure_service_account(k8s_namespace, "reader")
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{k8s_namespace}"
    kube.post(
        f"{rbac}/roles",
        {
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    kube.post(
        f"{rbac}/rolebindings",
        {
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "configmap-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": k8s_namespace}],
        },
    )
    path = control_plane.service_account_kubeconfig(k8s_namespace, "reader", expiration=600)
    who = json.loads(kubectl(["auth", "whoami", "-o", "json"], kubeconfig=path).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{k8s_namespace}:reader"

    with KubeRest(path) as as_reader:
        configmaps = f"/api/v1/namespaces/{k8s_namespace}/configmaps"
        listing = wait_until(
            lambda: as_reader.get(configmaps), timeout=10, what="configmap list allowed"
        )
        assert "kube-root-ca.crt" in [c["metadata"]["name"] for c in listing["items"]]
        denied: list[tuple[str, Any]] = [
            ("list secrets", lambda: as_reader.get(f"/api/v1/namespaces/{k8s_namespace}/secrets")),
            ("create configmap", lambda: as_reader.post(configmaps, {"metadata": {"name": "x"}})),
            (
                "configmaps elsewhere",
                lambda: as_reader.get("/api/v1/namespaces/default/configmaps"),
            ),
            ("list namespaces", lambda: as_reader.get("/api/v1/namespaces")),
        ]
        for what, call in denied:
            with pytest.raises(KubeError) as excinfo:
                call()
            assert excinfo.value.status == 403, what
    # kubectl agrees
    can_i = kubectl(["auth", "can-i", "list", "secrets"], kubeconfig=path, check=False)
    assert can_i.stdout.strip() == "no"


def test_garbage_collector_deletes_jobs_of_a_deleted_cronjob(
    kube: KubeRest, k8s_namespace: str
) -> None:
    batch = f"/apis/batch/v1/namespaces/{k8s_namespace}"
    pods = f"/api/v1/namespaces/{k8s_namespace}/pods"
    cronjob = kube.post(
        f"{batch}/cronjobs",
        {
            "metadata": {"name": "owner"},
            "spec": {
                "schedule": "0 0 1 1 *",
                "suspend": True,
                "jobTemplate": {"spec": _sleep_job_spec()},
            },
        },
    )
    owner_ref = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "owner",
        "uid": cronjob["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    kube.post(
        f"{batch}/jobs",
        {"metadata": {"name": "owned", "ownerReferences": [owner_ref]}, "spec": _sleep_job_spec()},
    )
    # the Job controller creates its pod (it stays Pending: no pod runner here)
    wait_until(
        lambda: kube.get(pods, labelSelector="job-name=owned")["items"],
        timeout=30,
        what="pod of the owned Job",
    )
    kube.delete(f"{batch}/cronjobs/owner", {"propagationPolicy": "Background"})

    def all_gone() -> bool:
        return not kube.get(f"{batch}/jobs")["items"] and not kube.get(pods)["items"]

    wait_until(all_gone, timeout=60, what="Job and Pod garbage-collected")


def _sleep_job_spec() -> dict[str, Any]:
    return {
        "backoffLimit": 0,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "c",
                        "image": "python",
                        "command": ["python", "-c", "import time; time.sleep(30)"],
                        "securityContext": RESTRICTED_CONTAINER_SECURITY,
                    }
                ],
            }
        },
    }


# what the pod reports about itself through its termination message
SELF_REPORT = """
import json, os, socket
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
report = {"uid": os.getuid(), "gid": os.getgid(), "cap_eff": status["CapEff"].strip(),
          "no_new_privs": status["NoNewPrivs"].strip(), "hostname": socket.gethostname(),
          "pod": os.environ.get("POD_NAME")}
open("/dev/termination-log", "w").write(json.dumps(report))
print("report written")
"""


def _condition(obj: dict[str, Any], kind: str) -> bool:
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def test_cronjob_spawns_a_job_whose_pod_the_runner_completes(
    kube: KubeRest, k8s_namespace: str, pod_runner: PodRunner
) -> None:
    """The one test that waits for a minute boundary: `* * * * *` fires within ~60 s."""
    batch = f"/apis/batch/v1/namespaces/{k8s_namespace}"
    container = {
        "name": "probe",
        "image": "python:3.11-slim",
        "command": ["python", "-c", SELF_REPORT],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
    }
    kube.post(
        f"{batch}/cronjobs",
        {
            "metadata": {"name": "every-minute"},
            "spec": {
                "schedule": "* * * * *",
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 3,
                "jobTemplate": {
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            "metadata": {"labels": {"app": "smoke"}},
                            "spec": {
                                "restartPolicy": "Never",
                                "automountServiceAccountToken": False,
                                "containers": [container],
                            },
                        },
                    }
                },
            },
        },
    )

    def complete_job() -> dict[str, Any] | None:
        jobs = kube.get(f"{batch}/jobs")["items"]
        return next((j for j in jobs if _condition(j, "Complete")), None)

    job = wait_until(complete_job, timeout=75, interval=1.0, what="a Complete Job of the CronJob")
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("CronJob", "every-minute", True)
    assert job["status"]["succeeded"] == 1

    job_name = job["metadata"]["name"]
    pods = kube.get(
        f"/api/v1/namespaces/{k8s_namespace}/pods", labelSelector=f"job-name={job_name}"
    )
    assert len(pods["items"]) == 1
    pod = pods["items"][0]
    pod_name = pod["metadata"]["name"]
    assert pod["spec"]["nodeName"] == pod_runner.node_name
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert terminated["startedAt"] and terminated["finishedAt"]
    assert json.loads(terminated["message"]) == {
        "uid": 65534,
        "gid": 65534,
        "cap_eff": "0000000000000000",
        "no_new_privs": "1",
        "hostname": pod_name,
        "pod": pod_name,
    }
    run = pod_runner.wait_for_pod(k8s_namespace, pod_name, timeout=5)
    assert "report written" in run.containers[0].log_path.read_text()

    # the CronJob controller records the successful run
    cronjob = wait_until(
        lambda: (
            (cj := kube.get(f"{batch}/cronjobs/every-minute"))["status"].get("lastSuccessfulTime")
            and cj
        ),
        timeout=15,
        what="CronJob lastSuccessfulTime",
    )
    assert cronjob["status"]["lastScheduleTime"]
