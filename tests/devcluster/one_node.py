"""A control plane with one real node running one pod, for the teardown tests.

    python -m tests.devcluster.one_node stop   # print the state as JSON, then tear down
    python -m tests.devcluster.one_node hold   # print the state, then wait to be killed

The pod runs the node's local pause image (no registry): what matters here is what a node
with a running pod leaves behind (shims, mounts, the pod's network namespace, cgroups).
"""

from __future__ import annotations

import json
import sys
import time

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeRest
from devcluster.lab import Lab, Topology
from devcluster.nodes import Node
from devcluster.runtime import cgroup_pids, process_start_time, wait_until
from devcluster.scheduler import Scheduler

HOLD_SECONDS = 300

PAUSE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "pause"},
    "spec": {
        "containers": [{"name": "pause", "image": "localhost/pause:1", "imagePullPolicy": "Never"}]
    },
}


def main(mode: str) -> int:
    topo = Topology().add_host("node1").add_router("r1").add_host("target")
    topo.add_link("node1", "r1").add_link("r1", "target")
    with (
        ControlPlane(serve_nodes=True) as cluster,
        Scheduler(cluster),
        Lab(topo) as lab,
        Node(cluster, lab, "node1", router="r1") as node,
        KubeRest(cluster.kubeconfig) as kube,
    ):
        kube.post("/api/v1/namespaces/default/pods", PAUSE_POD)
        wait_until(
            lambda: (
                kube.get("/api/v1/namespaces/default/pods/pause")["status"].get("phase")
                == "Running"
            ),
            timeout=60,
            what="pause pod running",
        )
        assert node.pod_network is not None
        state = {
            "workdir": str(node.paths.root),
            "cgroup": node.cgroup,
            "netns": lab.netns("node1"),
            "network_name": node.pod_network.network_name,
            "processes": [
                [pid, process_start_time(pid)] for pid in sorted(cgroup_pids(node.cgroup))
            ],
        }
        print(json.dumps(state), flush=True)
        if mode == "hold":
            time.sleep(HOLD_SECONDS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "stop"))
