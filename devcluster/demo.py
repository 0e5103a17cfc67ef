"""`make demo`: the whole product on one machine, from `helm install` to a firing alert.

Real control plane, Pushgateway, Prometheus and a network lab (two routes to one target);
the chart installed with `helm install`, its operator pod run by the pod runner with the
chart's ServiceAccount and RBAC; a TracerouteProbe; a route flip in the lab; the
PathChanged Event and the TraceroutePathChanged alert. Ctrl-C tears everything down.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from devcluster.controlplane import ControlPlane
from devcluster.kubetools import (
    RESTRICTED_LABELS,
    KubeRest,
    ensure_namespace,
    kubectl,
    wait_default_service_account,
)
from devcluster.lab import Lab, Topology
from devcluster.operator_process import create_job_from_cronjob, events_for, wait_ready
from devcluster.paths import CHART, ROOT
from devcluster.podrunner import HOST_NETNS, PodRunner
from devcluster.promstack import Prometheus, Pushgateway
from devcluster.runtime import VENV_BIN, cleanup_stale, wait_until
from devcluster.stack import (
    OperatorPorts,
    Release,
    install_crds,
    is_operator_pod,
    serve_operator,
)

RELEASE = "traceroute"
RELEASE_NAMESPACE = "traceroute-system"
PROBE_NAMESPACE = "demo"
PROBE = "lab-target"
PROBE_PATH = f"/apis/traceroute.dev/v1alpha1/namespaces/{PROBE_NAMESPACE}/tracerouteprobes/{PROBE}"
EXAMPLE = ROOT / "examples" / "single-target.yaml"
LINK_DELAY_MS = 3.0
ALERT = "TraceroutePathChanged"
ALERT_TIMEOUT_S = 90.0
SHOWN_METRICS = re.compile(
    r"^traceroute_(reached|hops|expected_hops|destination_rtt_seconds|destination_loss_ratio"
    r"|path_fingerprint|path_changes_total|run_duration_seconds)\{"
)


def step(number: int, title: str) -> None:
    print(f"\n==> {number}/6 {title}", flush=True)


def show(title: str, text: str) -> None:
    print(f"--- {title}")
    print(text.rstrip() or "(nothing)", flush=True)


class Demo:
    """State of one demo run; every resource it starts is on `self.stack`."""

    def __init__(self, stack: contextlib.ExitStack, workdir: Path) -> None:
        self.stack = stack
        self.workdir = workdir
        self.runs = 0

    # --- 1 -------------------------------------------------------------------------------

    def start_environment(self) -> None:
        step(1, "Control plane, Pushgateway, Prometheus, network lab, pod runner")
        self.cluster = self.stack.enter_context(ControlPlane())
        self.kube = self.stack.enter_context(KubeRest(self.cluster.kubeconfig))
        print(
            f"kube-apiserver {self.cluster.url} (Kubernetes {self.cluster.version()['gitVersion']})"
        )
        # the lab first: it creates the bridge the Pushgateway listens on
        self.lab = self.stack.enter_context(
            Lab(Topology.diamond(a_routers=2, b_routers=3, link_delay_ms=LINK_DELAY_MS))
        )
        self.lab.attach_cluster_network("probe")
        # runs here come seconds apart, not minutes: routers' ICMP buckets would be empty
        self.lab.lift_icmp_ratelimits(routers_only=True, burst=10_000, per_sec=100_000)
        self.pushgateway = self.stack.enter_context(Pushgateway())
        self.prometheus = self.stack.enter_context(Prometheus(pushgateway=self.pushgateway))
        self.target = self.lab.addr("target")
        print(f"Pushgateway    {self.pushgateway.url}  (the cluster network's gateway)")
        print(f"Prometheus     {self.prometheus.url}")
        print(
            f"lab            probe -> r1 -> {{a1 a2 | b1 b2 b3}} -> r2 -> target {self.target}, "
            f"{LINK_DELAY_MS:g} ms per link, path a active"
        )
        probe_netns = self.lab.netns("probe")
        runner = PodRunner(
            self.cluster.kubeconfig,
            netns_for_pod=lambda pod: HOST_NETNS if is_operator_pod(pod) else probe_netns,
            max_runtime_seconds=None,  # the operator pod runs until the demo ends
        )
        self.runner = runner.start()
        self.stack.callback(runner.stop)
        print(
            f"pod runner     node {runner.node_name}: probe pods in {probe_netns}, operator on host"
        )
        print(f"\n  export KUBECONFIG={self.cluster.kubeconfig}")

    # --- 2 -------------------------------------------------------------------------------

    def install_chart(self) -> None:
        step(2, "helm install the chart; the operator runs as its Deployment's pod")
        install_crds(self.cluster)
        ensure_namespace(self.kube, RELEASE_NAMESPACE, RESTRICTED_LABELS)
        release = Release(self.cluster, RELEASE, RELEASE_NAMESPACE, self.workdir / "helm")
        ports = OperatorPorts.free()
        args = ["install", RELEASE, str(CHART), *ports.helm_args(self.pushgateway.url)]
        print("$ helm install " + " ".join(args[1:]) + f" --namespace {RELEASE_NAMESPACE}")
        print(release.helm(*args).stdout.strip())
        self.operator = serve_operator(self.kube, release, ports, self.runner)
        show(
            f"kubectl -n {RELEASE_NAMESPACE} get deploy,pods",
            self.kubectl("-n", RELEASE_NAMESPACE, "get", "deploy,pods"),
        )

    # --- 3 -------------------------------------------------------------------------------

    def apply_probe(self) -> None:
        step(3, "Apply a TracerouteProbe and run it")
        ensure_namespace(self.kube, PROBE_NAMESPACE, RESTRICTED_LABELS)
        wait_default_service_account(self.kube, PROBE_NAMESPACE)
        probe: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
        probe["metadata"] = {"name": PROBE, "namespace": PROBE_NAMESPACE}
        hops = len(self.lab.truth("probe", "target"))
        probe["spec"].update(
            targets=[self.target],
            schedule="* * * * *",
            pathChange={"confirmRuns": 1},
            expectedHops=hops,
        )
        manifest = yaml.safe_dump(probe, sort_keys=False)
        show(f"kubectl apply -f - (from {EXAMPLE.relative_to(ROOT)})", manifest)
        print(self.kubectl("apply", "-f", "-", input_text=manifest).strip())
        wait_ready(self.kube, PROBE_NAMESPACE, PROBE)
        self.run_probe()
        self.show_probes()
        self.show_table()
        self.show_metrics()

    def run_probe(self, timeout: float = 90.0) -> dict[str, Any]:
        """A run now (`kubectl create job --from=cronjob/...`), then the status the operator
        wrote from its result."""
        self.runs += 1
        job = f"{PROBE}-demo-{self.runs}"
        cronjob = self.kube.get(PROBE_PATH)["status"]["cronJobName"]
        print(f"$ kubectl -n {PROBE_NAMESPACE} create job {job} --from=cronjob/{cronjob}")
        create_job_from_cronjob(self.kube, PROBE_NAMESPACE, cronjob, job)

        def done() -> dict[str, Any] | None:
            probe = self.kube.get(PROBE_PATH)
            last = (probe.get("status") or {}).get("lastRun") or {}
            return probe if last.get("jobName") == job else None

        probe: dict[str, Any] = wait_until(done, timeout=timeout, what=f"result of Job {job}")
        last = probe["status"]["lastRun"]
        print(f"run {job}: exit code {last.get('exitCode')}, status updated by the operator")
        return probe

    def show_table(self) -> None:
        """The probe's own mtr-like table, as an unprivileged user in the probe's netns."""
        argv = [
            str(VENV_BIN / "traceroute-probe"),
            "--format=table",
            "--max-hops=10",
            f"--termination-log={self.workdir / 'not-written'}",
            self.target,
        ]
        result = self.lab.run("probe", argv, user=65534, timeout=60)
        show(
            f"traceroute-probe {self.target}   (uid 65534, no capabilities, lab netns)",
            result.stdout,
        )

    def show_metrics(self) -> None:
        lines = [
            line
            for line in self.pushgateway.metrics_text().splitlines()
            if SHOWN_METRICS.match(line) and f'namespace="{PROBE_NAMESPACE}"' in line
        ]
        show(f"Pushgateway {self.pushgateway.url}/metrics (excerpt)", "\n".join(sorted(lines)))

    # --- 4 -------------------------------------------------------------------------------

    def load_alert_rules(self) -> None:
        step(4, "Load the generated PrometheusRule into Prometheus")
        rules = self.kube.get(
            f"/apis/monitoring.coreos.com/v1/namespaces/{PROBE_NAMESPACE}/prometheusrules"
        )["items"]
        if not rules:
            raise RuntimeError(f"the operator generated no PrometheusRule:\n{self.operator.logs()}")
        groups = [group for rule in rules for group in rule["spec"]["groups"]]
        path = self.workdir / "traceroute-rules.yaml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        # what prometheus-operator does with a PrometheusRule: a rule file, then a reload
        self.prometheus.reload(rule_files=[path])
        names = [r["metadata"]["name"] for r in rules]
        alerts = [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]
        print(f"PrometheusRule {', '.join(names)} -> {path}")
        print(f"alerts: {', '.join(sorted(set(alerts)))}")
        # The path-change alert compares the operator's counter with its value before: in a
        # cluster runs are minutes apart, here seconds, so wait until Prometheus has the "before"
        counter = f'traceroute_path_changes_total{{namespace="{PROBE_NAMESPACE}", probe="{PROBE}"}}'
        self.prometheus.wait_for(counter, lambda v: [s["value"][1] for s in v] == ["0"], timeout=60)
        print(f"Prometheus scrapes the Pushgateway: {counter} = 0")

    # --- 5 -------------------------------------------------------------------------------

    def flip_route(self) -> None:
        step(5, "Flip the route in the lab (path a -> path b) and run again")
        before = self.lab.truth("probe", "target")
        self.lab.use_path("b")
        after = self.lab.truth("probe", "target")
        print(f"path a: {' '.join(before)}")
        print(f"path b: {' '.join(after)}")
        self.run_probe()
        wait_until(
            lambda: events_for(self.kube, PROBE_NAMESPACE, PROBE, "PathChanged"),
            timeout=30,
            what="PathChanged event",
        )
        show(
            f"kubectl -n {PROBE_NAMESPACE} get events --field-selector reason=PathChanged",
            self.kubectl(
                "-n", PROBE_NAMESPACE, "get", "events", "--field-selector", "reason=PathChanged"
            ),
        )
        self.show_probes()
        status = self.kube.get(PROBE_PATH)["status"]
        conditions = {c["type"]: f"{c['status']} ({c.get('reason')})" for c in status["conditions"]}
        print(f"conditions: {json.dumps(conditions)}")
        for target in status.get("targets", []):
            print(f"target {target['name']}: lastChange {target.get('lastChange')!r}")
        self.show_metrics()
        print(
            f"\nwaiting up to {ALERT_TIMEOUT_S:.0f} s for Prometheus to fire {ALERT} ...",
            flush=True,
        )
        try:
            wait_until(
                lambda: (ALERT, "firing") in self.alert_states(),
                timeout=ALERT_TIMEOUT_S,
                interval=2.0,
                what=f"{ALERT} firing in Prometheus",
            )
        except TimeoutError:
            self.explain_missing_alert()
            raise
        self.print_alerts()

    def alerts(self) -> list[dict[str, Any]]:
        return [
            a
            for a in self.prometheus.alerts()
            if a["labels"].get("alertname", "").startswith("Traceroute")
        ]

    def explain_missing_alert(self) -> None:
        """What Prometheus saw, for a report when the alert does not come."""
        targets = [
            (t["scrapeUrl"], t["health"], t.get("lastError")) for t in self.prometheus.targets()
        ]
        print(f"scrape targets: {targets}")
        for group in self.prometheus.rules():
            for rule in group["rules"]:
                if rule.get("name") == ALERT:
                    print(
                        f"rule {ALERT}: health={rule.get('health')} error={rule.get('lastError')} "
                        f"state={rule.get('state')} query={rule.get('query')}"
                    )

    def alert_states(self) -> set[tuple[str, str]]:
        return {(a["labels"]["alertname"], a["state"]) for a in self.alerts()}

    def print_alerts(self) -> None:
        for alert in self.alerts():
            labels = alert["labels"]
            print(
                f"ALERT {labels['alertname']} [{alert['state']}] target={labels.get('target')} "
                f"severity={labels.get('severity')}: {alert['annotations'].get('summary')}",
                flush=True,
            )

    # --- 6 -------------------------------------------------------------------------------

    def wait_for_interrupt(self) -> None:
        step(6, "Everything keeps running (scheduled runs every minute); Ctrl-C tears it down")
        print(f"  export KUBECONFIG={self.cluster.kubeconfig}")
        print(f"  Prometheus alerts: {self.prometheus.url}/alerts")
        seen = self.alert_states()
        # alert changes (e.g. the expected-hops alert after its confirmation time) as they come
        while True:
            time.sleep(5)
            now = self.alert_states()
            if now != seen:
                seen = now
                self.print_alerts()

    def show_probes(self) -> None:
        wide = self.kubectl("-n", PROBE_NAMESPACE, "get", "trp", "-o", "wide")
        show(f"kubectl -n {PROBE_NAMESPACE} get trp -o wide", wide)

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        return kubectl(list(args), kubeconfig=self.cluster.kubeconfig, input_text=input_text).stdout


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_on_signals() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    # started in the background by a script, SIGINT arrives ignored: Ctrl-C must still work
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def run(wait: bool) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    cleanup_stale()
    started = time.monotonic()
    code = 0
    with _interrupt_on_signals():
        try:
            with contextlib.ExitStack() as stack:
                workdir = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="trop-demo-"))
                )
                demo = Demo(stack, workdir)
                try:
                    demo.start_environment()
                    demo.install_chart()
                    demo.apply_probe()
                    demo.load_alert_rules()
                    demo.flip_route()
                    print(f"\ndemo complete in {time.monotonic() - started:.0f} s")
                    if wait:
                        demo.wait_for_interrupt()
                except KeyboardInterrupt:
                    print("\ninterrupted", flush=True)
                except Exception as exc:
                    print(
                        f"\ndemo FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True
                    )
                    code = 1
                print(
                    "\n==> tearing down (pods, lab, Prometheus, Pushgateway, control plane)",
                    flush=True,
                )
        except KeyboardInterrupt:  # a second Ctrl-C during teardown: the rest is best effort
            code = 130
    print("torn down", flush=True)
    return code
