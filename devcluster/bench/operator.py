"""Benchmark of the operator at scale against the real apiserver.

``python -m devcluster.bench.operator [--probes 1000]`` (``make bench-operator``; needs the
control-plane binaries). Starts its own control plane with the TracerouteProbe and
prometheus-operator CRDs, runs ``traceroute-operator run`` with its own ServiceAccount
RBAC (data/rbac.yaml) for one namespace, applies N TracerouteProbes at once and reports:

- time from the first apply until every CronJob exists and every probe has a correct
  status (Ready, observedGeneration == generation, cronJobName set),
- the operator's peak RSS (VmHWM) and its CPU while idle afterwards,
- the apiserver requests it took (from the operator's own metrics),
- with ``--churn-pods N`` (default 5000): its RSS and CPU while N unrelated pods (no node
  binds them: they stay Pending) are created, deleted, re-created and deleted in the
  namespace it watches. The pod watch carries a labelSelector, so none of them reaches it.

Targets (issue 4): converge <= 60 s, peak RSS <= 150 MB; (issue 13) RSS <= 250 MB with
5000 churning unrelated pods.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeRest, ensure_namespace, wait_default_service_account
from devcluster.monitoring_crds import install_crds as install_monitoring_crds
from devcluster.operator_process import (
    OperatorProcess,
    install_crd,
    is_ready,
    probe_manifest,
    probe_path,
)
from devcluster.runtime import process_status_kib

NAMESPACE = "bench"
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 150.0
TARGET_CHURN_RSS_MB = 250.0
CHURN_ROUNDS = 2


def vm_rss_mb(operator: OperatorProcess) -> float:
    assert operator.proc is not None
    return process_status_kib(operator.proc.pid, "VmRSS") / 1024


@dataclass(frozen=True)
class ChurnReading:
    pods: int
    seconds: float
    rss_before_mb: float
    rss_after_mb: float
    rss_peak_mb: float
    cpu_seconds: float

    def rows(self) -> list[tuple[str, str, str, str]]:
        ok = self.rss_after_mb <= TARGET_CHURN_RSS_MB
        return [
            (
                f"{self.pods} unrelated pods x{CHURN_ROUNDS} churned",
                f"{self.seconds:.0f} s",
                "",
                "",
            ),
            (
                "operator RSS before/after churn",
                f"{self.rss_before_mb:.0f} / {self.rss_after_mb:.0f} MB",
                f"<= {TARGET_CHURN_RSS_MB:.0f} MB",
                "ok" if ok else "MISSED",
            ),
            ("operator peak RSS after churn", f"{self.rss_peak_mb:.0f} MB", "", ""),
            ("operator CPU during churn", f"{self.cpu_seconds:.1f} s", "", ""),
        ]


def measure_churn(kube: KubeRest, operator: OperatorProcess, count: int) -> ChurnReading:
    before, cpu = vm_rss_mb(operator), operator.cpu_seconds()
    seconds = churn_pods(kube, count) if count else 0.0
    return ChurnReading(
        pods=count,
        seconds=seconds,
        rss_before_mb=before,
        rss_after_mb=vm_rss_mb(operator),
        rss_peak_mb=operator.rss_peak_kib() / 1024,
        cpu_seconds=operator.cpu_seconds() - cpu,
    )


def churn_pods(kube: KubeRest, count: int) -> float:
    """Create and delete ``count`` unrelated pods, CHURN_ROUNDS times; returns seconds."""
    started = time.monotonic()

    def create(name: str) -> None:
        kube.post(
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "unrelated"}},
                "spec": {"containers": [{"name": "c", "image": "registry.test/unrelated:1"}]},
            },
        )

    def delete(name: str) -> None:
        kube.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for round_ in range(CHURN_ROUNDS):
            names = [f"unrelated-{round_}-{i}" for i in range(count)]
            list(pool.map(create, names))
            list(pool.map(delete, names))
    return time.monotonic() - started


def converged(kube: KubeRest, count: int) -> tuple[int, int]:
    """(CronJobs present, probes with a correct status)."""
    cronjobs = kube.request(
        "GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs", timeout=60
    ).get("items", [])
    probes = kube.request("GET", probe_path(NAMESPACE), timeout=60).get("items", [])
    good = 0
    for probe in probes:
        status = probe.get("status") or {}
        if is_ready(probe) and status.get("cronJobName") == f"trp-{probe['metadata']['name']}":
            good += 1
    return len(cronjobs), good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--churn-pods", type=int, default=5000)
    args = parser.parse_args(argv)
    count = args.probes

    with tempfile.TemporaryDirectory(prefix="trop-bench-") as tmp, ControlPlane() as cp:
        install_crd(cp.kubeconfig)
        install_monitoring_crds(cp.kubeconfig)
        with KubeRest(cp.kubeconfig) as kube:
            ensure_namespace(kube, NAMESPACE)
            wait_default_service_account(kube, NAMESPACE)
            operator = OperatorProcess(
                cp,
                kube,
                namespaces=[NAMESPACE],
                operator_namespace="traceroute-system",
                pushgateway_url="http://127.0.0.1:9",  # no runs in this benchmark
                log_dir=Path(tmp),
            )
            operator.start()
            try:
                started = time.monotonic()

                def create(index: int) -> None:
                    spec = {"targets": [f"192.0.2.{index % 250 + 1}"], "expectedHops": 5}
                    kube.post(probe_path(NAMESPACE), probe_manifest(f"p{index:04d}", spec))

                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    list(pool.map(create, range(count)))
                applied = time.monotonic() - started
                cronjobs = good = 0
                deadline = started + args.timeout
                while time.monotonic() < deadline:
                    cronjobs, good = converged(kube, count)
                    if cronjobs == count and good == count:
                        break
                    time.sleep(0.5)
                elapsed = time.monotonic() - started
                cpu_before = operator.cpu_seconds()
                time.sleep(args.idle_seconds)
                idle_cpu = (operator.cpu_seconds() - cpu_before) / args.idle_seconds
                rss_mb = operator.rss_peak_kib() / 1024
                churn = measure_churn(kube, operator, args.churn_pods)
                reconciles = operator.metric("traceroute_operator_reconciles_total", result="ok")
                errors = operator.metric("traceroute_operator_errors_total")
            finally:
                operator.stop()
                with contextlib.suppress(Exception):
                    kube.delete(f"/api/v1/namespaces/{NAMESPACE}")

    ok_time = cronjobs == count and good == count and elapsed <= TARGET_SECONDS
    rows = [
        ("probes applied", f"{count}", "", ""),
        ("time to apply them (client)", f"{applied:.1f} s", "", ""),
        (
            "all CronJobs + correct status",
            f"{elapsed:.1f} s" if good == count else f"not after {elapsed:.0f} s",
            f"<= {TARGET_SECONDS:.0f} s",
            "ok" if ok_time else "MISSED",
        ),
        ("CronJobs / correct statuses", f"{cronjobs} / {good}", f"{count} / {count}", ""),
        ("throughput", f"{count / elapsed:.1f} probes/s", "", ""),
        (
            "operator peak RSS",
            f"{rss_mb:.0f} MB",
            f"<= {TARGET_RSS_MB:.0f} MB",
            "ok" if rss_mb <= TARGET_RSS_MB else "MISSED",
        ),
        ("operator idle CPU", f"{idle_cpu * 100:.1f} % of a core", "", ""),
        *churn.rows(),
        ("successful reconciles / errors", f"{reconciles:.0f} / {errors:.0f}", "", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>22}  {'target':>10}  result")
    for name, value, target, result in rows:
        print(f"{name:<{width}}  {value:>22}  {target:>10}  {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
