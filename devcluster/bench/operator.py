"""Benchmark of the operator at scale against the real apiserver.

``python -m devcluster.bench.operator [--probes 1000]`` (``make bench-operator``; needs the
control-plane binaries). Starts its own control plane with the TracerouteProbe and
prometheus-operator CRDs, runs ``traceroute-operator run`` with its own ServiceAccount
RBAC (data/rbac.yaml) for one namespace, applies N TracerouteProbes at once and reports:

- time from the first apply until every CronJob exists and every probe has a correct
  status (Ready, observedGeneration == generation, cronJobName set),
- the operator's peak RSS (VmHWM) and its CPU while idle afterwards,
- the apiserver requests it took (from the operator's own metrics).

Targets (issue 4): converge <= 60 s, peak RSS <= 150 MB.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import KubeRest, ensure_namespace
from devcluster.monitoring_crds import install_crds as install_monitoring_crds
from devcluster.operator_process import (
    OperatorProcess,
    install_crd,
    is_ready,
    probe_manifest,
    probe_path,
)

NAMESPACE = "bench"
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 150.0


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
    args = parser.parse_args(argv)
    count = args.probes

    with tempfile.TemporaryDirectory(prefix="trop-bench-") as tmp, ControlPlane() as cp:
        install_crd(cp.kubeconfig)
        install_monitoring_crds(cp.kubeconfig)
        with KubeRest(cp.kubeconfig) as kube:
            ensure_namespace(kube, NAMESPACE)
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
        ("successful reconciles / errors", f"{reconciles:.0f} / {errors:.0f}", "", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>22}  {'target':>10}  result")
    for name, value, target, result in rows:
        print(f"{name:<{width}}  {value:>22}  {target:>10}  {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
