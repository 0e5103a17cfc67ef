"""The operator's own /metrics (its health and throughput, not the network's)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class OperatorMetrics:
    """Metric families of one operator process, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "traceroute_operator_reconciles_total",
            "Reconciles of TracerouteProbes by result (ok, retry, invalid).",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "traceroute_operator_reconcile_duration_seconds",
            "Time to reconcile one TracerouteProbe (CronJob, monitoring objects, status).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.errors = Counter(
            "traceroute_operator_errors_total",
            "Errors by stage (apply, status, pushgateway, event, monitoring, result).",
            ["stage"],
            registry=self.registry,
        )
        self.runs = Counter(
            "traceroute_operator_runs_total",
            "Probe runs read from pod termination messages, by outcome "
            "(reached, unreachable, failed, no_result).",
            ["outcome"],
            registry=self.registry,
        )
        self.runs_skipped = Counter(
            "traceroute_operator_runs_skipped_total",
            "Pod results not applied, by reason (already_read, older, probe_gone, uid_mismatch).",
            ["reason"],
            registry=self.registry,
        )
        self.path_changes = Counter(
            "traceroute_operator_path_changes_total",
            "Confirmed path changes, by probe namespace and name.",
            ["namespace", "probe"],
            registry=self.registry,
        )
        self.drift_restores = Counter(
            "traceroute_operator_cronjob_restores_total",
            "CronJobs restored after someone else deleted or changed them, by what happened.",
            ["change"],
            registry=self.registry,
        )
        self.probes = Gauge(
            "traceroute_operator_probes",
            "TracerouteProbes this operator manages.",
            registry=self.registry,
        )

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)
