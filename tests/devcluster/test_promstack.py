"""Smoke tests of the real Pushgateway + Prometheus, and of the whole pod path: a pod in a lab
network namespace pushes through the cluster network and Prometheus has the sample."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.kubetools import KubeRest
from devcluster.lab import Topology
from devcluster.promstack import Prometheus, Pushgateway, promtool_path
from devcluster.runtime import wait_until
from tests.fixtures.lab import LabFactory

pytestmark = pytest.mark.slow


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_pushed_sample_is_queryable_with_its_own_labels(
    pushgateway: Pushgateway, prometheus: Prometheus
) -> None:
    job = _unique("smoke")
    pushgateway.push(job, {"namespace": "ns1", "probe": "p1"}, "trop_smoke_value 42\n")
    result = prometheus.wait_for(f'trop_smoke_value{{job="{job}"}}', timeout=20)
    assert len(result) == 1
    labels = result[0]["metric"]
    # honor_labels: the pushed job/grouping labels win over the scrape's job="pushgateway"
    assert (labels["job"], labels["namespace"], labels["probe"]) == (job, "ns1", "p1")
    assert "exported_job" not in labels
    assert float(result[0]["value"][1]) == 42.0


def test_put_replaces_the_group_and_delete_removes_it(
    pushgateway: Pushgateway, prometheus: Prometheus
) -> None:
    job = _unique("replace")
    group = {"probe": "p"}
    pushgateway.push(job, group, "trop_keep 1\ntrop_vanish 1\n")
    prometheus.wait_for(
        f'{{job="{job}", __name__=~"trop_keep|trop_vanish"}}', lambda r: len(r) == 2
    )
    pushgateway.push(job, group, "trop_keep 2\n")  # PUT: trop_vanish leaves the group
    assert "trop_vanish" not in pushgateway.metrics_text().split(f'job="{job}"', 1)[-1]
    prometheus.wait_for(f'trop_vanish{{job="{job}"}}', lambda r: not r, timeout=20)
    assert prometheus.query_value(f'trop_keep{{job="{job}"}}') == 2.0
    pushgateway.delete_group(job, group)
    prometheus.wait_for(f'trop_keep{{job="{job}"}}', lambda r: not r, timeout=20)


def test_alert_rule_fires_after_reload(
    pushgateway: Pushgateway, prometheus: Prometheus, tmp_path: Path
) -> None:
    job = _unique("alert")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "smoke",
                        "rules": [
                            {
                                "alert": "TropSmokeHigh",
                                "expr": f'trop_alert_value{{job="{job}"}} > 1',
                                "labels": {"severity": "warning"},
                                "annotations": {"summary": "value is {{ $value }}"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    check = subprocess.run(
        [promtool_path(), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    prometheus.reload(rule_files=[rules])
    try:
        pushgateway.push(job, {}, "trop_alert_value 5\n")

        def firing() -> list[dict[str, Any]]:
            return [
                a
                for a in prometheus.alerts()
                if a["labels"].get("alertname") == "TropSmokeHigh" and a["state"] == "firing"
            ]

        alerts = wait_until(firing, timeout=20, what="TropSmokeHigh firing")
        assert alerts[0]["annotations"]["summary"] == "value is 5"
        pushgateway.push(job, {}, "trop_alert_value 0\n")
        wait_until(lambda: not firing(), timeout=20, what="TropSmokeHigh resolved")
    finally:
        prometheus.reload(rule_files=[])
        pushgateway.delete_group(job, {})


# runs inside the lab's probe host, as uid 65534, and pushes like the probe does
LAB_POD = r"""
import json, os, socket, urllib.request
url = os.environ["PUSHGATEWAY"] + "/metrics/job/labpod/instance/" + os.environ["POD_NAME"]
request = urllib.request.Request(url, data=b"trop_lab_pod_push 1\n", method="PUT")
status = urllib.request.urlopen(request, timeout=5).status
report = {"push_status": status, "interfaces": [n for _, n in socket.if_nameindex()],
          "ping_group_range": open("/proc/sys/net/ipv4/ping_group_range").read().split()}
open("/dev/termination-log", "w").write(json.dumps(report))
"""


def test_lab_pod_pushes_through_the_cluster_network(  # noqa: PLR0917 - fixtures
    lab_factory: LabFactory,
    pod_runner_factory: Any,
    k8s_namespace: str,
    kube: KubeRest,
    pushgateway: Pushgateway,
    prometheus: Prometheus,
) -> None:
    lab = lab_factory(Topology.chain(routers=1))
    cluster_addr = lab.attach_cluster_network("probe")
    runner = pod_runner_factory(
        namespace=k8s_namespace, netns_for_pod=lambda pod: lab.netns("probe")
    )
    pod = {
        "metadata": {"name": "lab-pod"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "65534 65534"}]
            },
            "containers": [
                {
                    "name": "push",
                    "image": "python",
                    "command": ["python", "-c", LAB_POD],
                    "env": [
                        {"name": "PUSHGATEWAY", "value": pushgateway.url},
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                    ],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65534,
                        "runAsGroup": 65534,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
        },
    }
    kube.post(f"/api/v1/namespaces/{k8s_namespace}/pods", pod)
    run = runner.wait_for_pod(k8s_namespace, "lab-pod", timeout=30)
    status = kube.get(f"/api/v1/namespaces/{k8s_namespace}/pods/lab-pod")["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0, run.containers[0].log_path.read_text()
    report = json.loads(terminated["message"])
    assert report["push_status"] == 200
    assert "cluster0" in report["interfaces"]  # the lab host's interfaces, not a fresh netns
    assert report["ping_group_range"] == ["65534", "65534"]  # pod sysctl applied in its netns
    assert status["podIP"] in [*lab.addrs("probe"), cluster_addr]
    assert len(status["podIPs"]) <= 2
    result = prometheus.wait_for('trop_lab_pod_push{job="labpod", instance="lab-pod"}', timeout=20)
    assert float(result[0]["value"][1]) == 1.0
    pushgateway.delete_group("labpod", {"instance": "lab-pod"})


def test_a_new_pushgateway_starts_empty() -> None:
    """Debian's default persistence file would hand a gateway the last one's groups."""
    with Pushgateway(listen_host="127.0.0.1") as first:
        first.push(_unique("left"), {"instance": "x"}, "trop_left_behind 1\n")
    with Pushgateway(listen_host="127.0.0.1") as second:
        assert second.groups() == []
