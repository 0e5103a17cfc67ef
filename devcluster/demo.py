"""`make demo`: the whole product on one machine, from `helm install` to a firing alert.

A cluster with real nodes (control plane, kube-scheduler, two kubelets on containerd, each
node in its own place of a network lab with two routes to one target), the images built from
the Dockerfiles and pulled from a private TLS registry with a pull Secret; the chart installed
with `helm install`, its operator running as the Deployment's pod; a TracerouteProbe whose
runs are pods on a node; a route flip in the lab; the PathChanged Event and the
TraceroutePathChanged alert in Prometheus. Ctrl-C (or SIGTERM, or an error) tears everything
down; `--once` (make demo-once) tears down after the last step.
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

from devcluster.cluster import DevCluster, node_topology
from devcluster.kubetools import KubeRest, kubectl
from devcluster.lab import Lab
from devcluster.node_release import chart_values, prepare_namespace, ready_operator_pod
from devcluster.operator_process import create_job_from_cronjob, events_for, wait_ready
from devcluster.paths import CHART, ROOT
from devcluster.promstack import Prometheus
from devcluster.runtime import cleanup_stale, wait_until
from devcluster.stack import OPERATOR_SELECTOR, Release, install_crds

RELEASE = "traceroute"
RELEASE_NAMESPACE = "traceroute-system"
PROBE_NAMESPACE = "demo"
PROBE = "lab-target"
PROBE_PATH = f"/apis/traceroute.dev/v1alpha1/namespaces/{PROBE_NAMESPACE}/tracerouteprobes/{PROBE}"
PULL_SECRET = "regcred"
IMAGES = ("traceroute-operator", "traceroute-probe")
NODE_COUNT = 2
VANTAGE_NODE = "node1"  # the probe's nodeSelector: its trace starts at this node's router
BRANCHES = (2, 3)  # routers on path a and on path b: the flip adds a hop
EXAMPLE = ROOT / "examples" / "single-target.yaml"
LINK_DELAY_MS = 3.0
ALERT = "TraceroutePathChanged"
ALERT_TIMEOUT_S = 90.0
SHOWN_METRICS = re.compile(
    r"^traceroute_(reached|hops|expected_hops|destination_rtt_seconds|destination_loss_ratio"
    r"|path_fingerprint|path_changes_total|run_duration_seconds)\{"
)
POD_IMAGES = (
    "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName,"
    "IMAGE:.status.containerStatuses[0].image,IMAGE-ID:.status.containerStatuses[0].imageID"
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
        step(1, "Cluster: control plane, kube-scheduler, two nodes, TLS registry, network lab")
        print(
            "building the images from the Dockerfiles (cached when unchanged), starting the "
            "cluster ...",
            flush=True,
        )
        topology = node_topology(NODE_COUNT, branches=BRANCHES, link_delay_ms=LINK_DELAY_MS)
        self.dev = self.stack.enter_context(
            DevCluster(node_count=NODE_COUNT, images=IMAGES, topology=topology)
        )
        assert self.dev.control_plane is not None and self.dev.registry is not None
        assert self.dev.pushgateway is not None
        self.kube = self.stack.enter_context(KubeRest(self.dev.kubeconfig))
        self.pushgateway = self.dev.pushgateway
        self.prometheus = self.stack.enter_context(Prometheus(pushgateway=self.pushgateway))
        # runs here come seconds apart, not minutes: routers' ICMP buckets would be empty
        self.lab.lift_icmp_ratelimits(routers_only=True, burst=10_000, per_sec=100_000)
        self.target = self.dev.target_address()
        control_plane = self.dev.control_plane
        print(
            f"kube-apiserver {control_plane.url} "
            f"(Kubernetes {control_plane.version()['gitVersion']})"
        )
        print(f"registry       {self.dev.registry.host}  (TLS, own CA, htpasswd)")
        for name in IMAGES:
            print(f"  pushed       {self.dev.image(name)}")
        print(f"Pushgateway    {self.pushgateway.url}  (on the cluster network)")
        print(f"Prometheus     {self.prometheus.url}")
        print(
            f"lab            nodeN -> rN -> rcore -> {{a1 a2 | b1 b2 b3}} -> rjoin -> "
            f"target {self.target}, {LINK_DELAY_MS:g} ms per link, path a active"
        )
        for node in self.dev.nodes:
            print(
                f"node {node.name}     first hop {node.router}, InternalIP {node.node_ip}, "
                f"root {node.paths.root}"
            )
        show("kubectl get nodes -o wide", self.kubectl("get", "nodes", "-o", "wide"))
        print(f"\n  export KUBECONFIG={self.dev.kubeconfig}")

    @property
    def lab(self) -> Lab:
        assert self.dev.lab is not None
        return self.dev.lab

    # --- 2 -------------------------------------------------------------------------------

    def install_chart(self) -> None:
        step(2, "helm install the chart from the private registry; the operator's pod starts")
        assert self.dev.control_plane is not None
        install_crds(self.dev.control_plane)
        for namespace in (RELEASE_NAMESPACE, PROBE_NAMESPACE):
            prepare_namespace(self.kube, self.dev, namespace, PULL_SECRET)
        print(
            f"namespaces {RELEASE_NAMESPACE}, {PROBE_NAMESPACE}: PodSecurity restricted, "
            f"pull Secret {PULL_SECRET} (kubernetes.io/dockerconfigjson)"
        )
        release = Release(self.dev.control_plane, RELEASE, RELEASE_NAMESPACE, self.workdir / "helm")
        args = ["install", RELEASE, str(CHART), *chart_values(self.dev, PULL_SECRET)]
        print("$ helm install " + " ".join(args[1:]) + f" --namespace {RELEASE_NAMESPACE}")
        print(release.helm(*args).stdout.strip())
        wait_until(
            lambda: ready_operator_pod(self.kube, RELEASE_NAMESPACE),
            timeout=180,
            what="operator pod Ready",
        )
        wait_until(
            lambda: "traceroute-operator started" in self.operator_logs(),
            timeout=60,
            what="the operator's start-up line in kubectl logs",
        )
        show(
            f"kubectl -n {RELEASE_NAMESPACE} get deploy,pods -o wide",
            self.kubectl("-n", RELEASE_NAMESPACE, "get", "deploy,pods", "-o", "wide"),
        )
        show(
            f"kubectl -n {RELEASE_NAMESPACE} logs -l {OPERATOR_SELECTOR} --tail=3",
            self.operator_logs(tail=3),
        )

    def operator_logs(self, tail: int = -1) -> str:
        return kubectl(
            ["-n", RELEASE_NAMESPACE, "logs", "-l", OPERATOR_SELECTOR, f"--tail={tail}"],
            kubeconfig=self.dev.kubeconfig,
            check=False,
        ).stdout

    # --- 3 -------------------------------------------------------------------------------

    def apply_probe(self) -> None:
        step(3, f"Apply a TracerouteProbe (runs on {VANTAGE_NODE}) and run it")
        probe: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
        probe["metadata"] = {"name": PROBE, "namespace": PROBE_NAMESPACE}
        hops = len(self.truth())
        probe["spec"].update(
            targets=[self.target],
            schedule="* * * * *",
            pathChange={"confirmRuns": 1},
            expectedHops=hops,
            nodeSelector={"kubernetes.io/hostname": VANTAGE_NODE},
        )
        manifest = yaml.safe_dump(probe, sort_keys=False)
        show(f"kubectl apply -f - (from {EXAMPLE.relative_to(ROOT)})", manifest)
        print(self.kubectl("apply", "-f", "-", input_text=manifest).strip())
        wait_ready(self.kube, PROBE_NAMESPACE, PROBE)
        job = self.run_probe()
        self.show_probes()
        self.show_run_pod(job)
        self.show_metrics()

    def truth(self) -> list[str]:
        """The hops the lab routes a packet from the vantage node's pods along right now."""
        return self.lab.truth(VANTAGE_NODE, "target")

    def run_probe(self, timeout: float = 180.0) -> str:
        """A run now (`kubectl create job --from=cronjob/...`), until the operator wrote its
        result into the status; returns the Job's name."""
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
        return job

    def show_run_pod(self, job: str) -> None:
        """Where the run's pod ran, which image it pulled, and what it printed."""
        selector = f"job-name={job}"
        show(
            f"kubectl -n {PROBE_NAMESPACE} get pods -l {selector} -o wide",
            self.kubectl("-n", PROBE_NAMESPACE, "get", "pods", "-l", selector, "-o", "wide"),
        )
        show(
            f"kubectl -n {PROBE_NAMESPACE} get pods -l {selector} -o custom-columns=...",
            self.kubectl("-n", PROBE_NAMESPACE, "get", "pods", "-l", selector, "-o", POD_IMAGES),
        )
        self.show_logs(job)

    def show_logs(self, job: str) -> None:
        show(
            f"kubectl -n {PROBE_NAMESPACE} logs job/{job}   (the probe's table; uid 65534, "
            "no capabilities, seccomp RuntimeDefault, read-only root)",
            self.kubectl("-n", PROBE_NAMESPACE, "logs", f"job/{job}"),
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
            raise RuntimeError(f"the operator generated no PrometheusRule:\n{self.operator_logs()}")
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
        before = self.truth()
        self.lab.use_path("b")
        after = self.truth()
        print(f"path a: {' '.join(before)}")
        print(f"path b: {' '.join(after)}")
        job = self.run_probe()
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
        self.show_logs(job)
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
        print(f"  export KUBECONFIG={self.dev.kubeconfig}")
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
        return kubectl(list(args), kubeconfig=self.dev.kubeconfig, input_text=input_text).stdout


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
    """`wait=False` (make demo-once): tear down after the last step and exit 0."""
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
                    "\n==> tearing down (Prometheus, nodes: kubelets, containerd, pods; "
                    "registry, lab, Pushgateway, control plane)",
                    flush=True,
                )
        except KeyboardInterrupt:  # a second Ctrl-C during teardown: the rest is best effort
            code = 130
    print("torn down", flush=True)
    return code
