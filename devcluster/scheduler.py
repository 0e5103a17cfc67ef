"""kube-scheduler for a control plane with real nodes (devcluster.nodes)."""

from __future__ import annotations

import os

from devcluster.controlplane import BIN_DIR, ControlPlane
from devcluster.runtime import RuntimeDir

SCHEDULER_USER = "system:kube-scheduler"


class SchedulerError(RuntimeError):
    pass


class Scheduler:
    """The real scheduler as its built-in RBAC identity; no serving port, no leader lock."""

    def __init__(self, cluster: ControlPlane) -> None:
        self.cluster = cluster
        self.rundir: RuntimeDir | None = None

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Scheduler:
        binary = BIN_DIR / "kube-scheduler"
        if not binary.is_file():
            raise SchedulerError(f"{binary} missing: make env (devcluster/env/build-node.sh)")
        self.rundir = RuntimeDir("scheduler", owner_pid=os.getpid())
        cert, key = self.cluster.issue_certificate(SCHEDULER_USER)
        kubeconfig = self.cluster.kubeconfig_for_certificate(
            SCHEDULER_USER, cert, key, self.rundir.path / "scheduler.kubeconfig"
        )
        proc = self.rundir.spawn(
            "kube-scheduler",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                # nothing scrapes it here; every port it opened would be one more to pick
                "--secure-port=0",
            ],
        )
        if proc.poll() is not None:
            raise SchedulerError(f"kube-scheduler exited: {self.rundir.log_tail('kube-scheduler')}")
        return self

    def stop(self) -> None:
        if self.rundir is not None:
            self.rundir.remove(grace_seconds=5)
            self.rundir = None

    def log_tail(self) -> str:
        return self.rundir.log_tail("kube-scheduler") if self.rundir else ""
