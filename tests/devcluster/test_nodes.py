"""The probe on real nodes: two kubelets on containerd, the real scheduler, the probe image
built from probe/Dockerfile and pulled from a private TLS registry with a pull secret.

Every fact is read from inside a real probe container (its /proc, its root filesystem, its
sysctls), in a pod built by the operator's own CronJob builder, so a change of the product's
pod spec is what these tests see.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from traceroute_operator.builders.cronjob import build_cronjob
from traceroute_operator.config import OperatorConfig
from traceroute_operator.pushgateway_policy import effective_pushgateway
from traceroute_operator.ref import ProbeRef
from traceroute_operator.spec import ProbeSpec

from devcluster.cluster import DevCluster
from devcluster.kubetools import KubeRest, kubectl
from devcluster.nodes import Node
from devcluster.runtime import wait_until
from tests.fixtures import nodes as node_fixtures

# this module's `kube` is the real-node cluster's, not the session control plane's
kube = node_fixtures.kube

pytestmark = pytest.mark.slow

PULL_SECRET = "regcred"
# Printed by the container before it becomes the probe (exec): what the runtime applied.
FACTS = r"""
import json, os, socket, sys
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\t" in line)
try:
    open("/written-by-the-probe", "w").close()
    read_only_root = False
except OSError as exc:
    read_only_root = exc.errno == 30  # EROFS
def reaches(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False
facts = {
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "CapEff": status["CapEff"].strip(), "CapPrm": status["CapPrm"].strip(),
    "Seccomp": status["Seccomp"].strip(), "NoNewPrivs": status["NoNewPrivs"].strip(),
    "read_only_root": read_only_root,
    "ping_group_range": open("/proc/sys/net/ipv4/ping_group_range").read().split(),
    "kubernetes_service": reaches("10.96.0.1", 443),
    "registry": reaches(*os.environ["TROP_REGISTRY"].split(":")),
}
print("FACTS " + json.dumps(facts), flush=True)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def probe_object(namespace: str, name: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "traceroute.dev/v1alpha1",
        "kind": "TracerouteProbe",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        # at most 6 probes per TTL: the routers keep the kernel's ICMP rate limits
        "spec": {
            "targets": [target],
            "protocol": "icmp",
            "flows": 1,
            "probesPerHop": 3,
            "schedule": "*/5 * * * *",
        },
    }


def probe_pod(
    dev: DevCluster, namespace: str, name: str, node: Node, *, pull_secret: bool = True
) -> dict[str, Any]:
    """The pod of the operator's CronJob for a probe of the lab's target, on `node`."""
    assert dev.pushgateway is not None and dev.registry is not None
    config = OperatorConfig(
        probe_image=dev.image("traceroute-probe"),
        probe_image_pull_secrets=(PULL_SECRET,) if pull_secret else (),
        pushgateway_url=dev.pushgateway.url,
    )
    body = probe_object(namespace, name, dev.target_address())
    spec = ProbeSpec.from_dict(body["spec"])
    ref = ProbeRef.from_body(body)
    cronjob = build_cronjob(ref, spec, effective_pushgateway(spec, config, ref), config)
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    pod = template["spec"]
    pod["nodeSelector"] = {"kubernetes.io/hostname": node.name}
    container = pod["containers"][0]
    container["command"] = ["python3", "-c", FACTS, *config.probe_command]
    container["env"] = [{"name": "TROP_REGISTRY", "value": dev.registry.host}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": pod,
    }


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def wait_pod(kube: KubeRest, namespace: str, name: str, predicate: Any, timeout: float) -> Any:
    """wait_until with the pod's status and events in the failure."""
    try:
        return wait_until(predicate, timeout=timeout, what=f"pod {name}")
    except TimeoutError as exc:
        status = kube.get(pod_path(namespace, name))["status"]
        events = kube.get(
            f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.name={name}"
        )["items"]
        seen = [(e["reason"], e["message"]) for e in events]
        pytest.fail(f"{exc}\nstatus: {json.dumps(status)}\nevents: {seen}")


def finished(kube: KubeRest, namespace: str, name: str) -> dict[str, Any] | None:
    pod = kube.get(pod_path(namespace, name))
    return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None


def test_two_nodes_are_ready_on_containerd(dev_cluster: DevCluster, kube: KubeRest) -> None:
    nodes = kube.get("/api/v1/nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["node1", "node2"]
    for node in nodes:
        info = node["status"]["nodeInfo"]
        assert info["containerRuntimeVersion"].startswith("containerd://1.")
        assert info["kubeletVersion"] == "v1.36.3"
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
    internal = {
        n["metadata"]["name"]: [
            a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"
        ]
        for n in nodes
    }
    assert internal == {node.name: [node.node_ip] for node in dev_cluster.nodes}


def test_pull_without_the_secret_is_refused_with_401(
    dev_cluster: DevCluster, kube: KubeRest, node_namespace: str
) -> None:
    # first in this file: no node has the image yet, so the pull cannot be skipped
    node = dev_cluster.nodes[1]
    pod = probe_pod(dev_cluster, node_namespace, "no-secret", node, pull_secret=False)
    assert "imagePullSecrets" not in pod["spec"]
    kube.post(f"/api/v1/namespaces/{node_namespace}/pods", pod)

    def waiting() -> dict[str, Any] | None:
        status = kube.get(pod_path(node_namespace, "no-secret"))["status"]
        for container in status.get("containerStatuses", []):
            state = container.get("state", {}).get("waiting", {})
            if state.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                return dict(state)
        return None

    state = wait_pod(kube, node_namespace, "no-secret", waiting, timeout=90)
    assert "401" in state.get("message", ""), state
    assert kube.get(pod_path(node_namespace, "no-secret"))["status"]["phase"] == "Pending"
    events = kube.get(
        f"/api/v1/namespaces/{node_namespace}/events",
        fieldSelector="involvedObject.name=no-secret",
    )["items"]
    assert any(e["reason"] == "Failed" and "401" in e["message"] for e in events), events


def test_probe_container_on_each_node(
    dev_cluster: DevCluster, kube: KubeRest, node_namespace: str
) -> None:
    names = {}
    for node in dev_cluster.nodes:
        name = f"probe-{node.name}"
        kube.post(
            f"/api/v1/namespaces/{node_namespace}/pods",
            probe_pod(dev_cluster, node_namespace, name, node),
        )
        names[node.name] = name
    first_hops = set()
    for node in dev_cluster.nodes:
        name = names[node.name]
        pod = wait_pod(
            kube, node_namespace, name, lambda n=name: finished(kube, node_namespace, n), 180
        )
        logs = kubectl(
            ["logs", "-n", node_namespace, name], kubeconfig=dev_cluster.kubeconfig
        ).stdout
        # the exit code and termination message first: pytest cuts a long status short
        terminated = [
            status.get("state", {}).get("terminated", {})
            for status in pod["status"].get("containerStatuses", [])
        ]
        assert pod["status"]["phase"] == "Succeeded", (terminated, logs, pod["status"])
        # scheduled by kube-scheduler onto the node its selector names, image from the registry
        assert pod["spec"]["nodeName"] == node.name
        container = pod["status"]["containerStatuses"][0]
        assert container["image"] == dev_cluster.image("traceroute-probe")
        assert "@sha256:" in container["imageID"]
        assert node.pod_network is not None
        assert pod["status"]["podIP"] in {str(a) for a in node.pod_network.node4.network}

        # kubectl logs: through the apiserver to this node's kubelet
        facts_line = next(line for line in logs.splitlines() if line.startswith("FACTS "))
        facts = json.loads(facts_line.removeprefix("FACTS "))
        assert facts["uid"] == 65534 and facts["gid"] == 65534
        assert facts["CapEff"] == "0000000000000000" and facts["CapPrm"] == "0000000000000000"
        assert facts["Seccomp"] == "2"  # SECCOMP_MODE_FILTER: RuntimeDefault applied
        assert facts["NoNewPrivs"] == "1"
        assert facts["read_only_root"] is True
        # the pod's sysctl, set by the kubelet through the runtime (the kernel's default is
        # "1 0"; containerd's own enable_unprivileged_icmp is off)
        assert facts["ping_group_range"] == ["65534", "65534"]
        # cluster services reachable, anything else on the host's cluster address not
        assert facts["kubernetes_service"] is True
        assert facts["registry"] is False

        # the probe's result, back through the kubelet as the termination message
        message = json.loads(container["state"]["terminated"]["message"])
        truth = dev_cluster.trace_truth(node)
        (target,) = message["t"]
        assert target["a"] == dev_cluster.target_address() and target["r"] is True
        assert target["p"] == [[hop] for hop in truth], (target, truth)
        assert message["code"] == 0, message
        first_hops.add(truth[0])
    # each node's pods start at their own router
    assert len(first_hops) == len(dev_cluster.nodes)
