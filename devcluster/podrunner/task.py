"""One pod's life on the runner's node: bind, prepare, run (with restarts), report, stop."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from devcluster.kubetools import KubeError, KubeRest
from devcluster.podrunner.objects import ApiObjects
from devcluster.podrunner.podspec import (
    MAX_RESTARTS,
    ClusterObjects,
    FilesVolume,
    Image,
    Pod,
    PodFacts,
    PodSpecError,
    ProjectedFile,
    active_deadline_seconds,
    fs_group,
    image_name,
    kill_grace_seconds,
    launch_plan,
    restarts_after,
    unsupported_feature,
    volume_files,
)
from devcluster.podrunner.sandbox import (
    MountPoints,
    Network,
    PodSandbox,
    PreparedContainer,
)
from devcluster.podrunner.status import (
    ContainerResult,
    ContainerStatuses,
    StatusWriter,
    exit_reason,
    interruption,
    now_rfc3339,
    pod_phase,
    runner_error_status,
    running_status,
    terminal_status,
    termination_message,
    unsupported_status,
    waiting_status,
)


@dataclass
class PodRun:
    """What happened to one pod (for test assertions; the API status says the same)."""

    namespace: str
    name: str
    uid: str
    netns: str | None
    phase: str = "Pending"
    reason: str | None = None
    containers: list[ContainerResult] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


class TaskHost(Protocol):
    """What a pod task needs from the runner (its node)."""

    kubeconfig: Path
    node_name: str
    apiserver_host: str
    apiserver_port: int
    images: dict[str, Image]
    max_runtime_seconds: float | None
    mount_points: MountPoints

    def note_error(self, text: str) -> None: ...

    def confirm_delete(self, pod: Pod) -> None: ...

    def forget_run(self, uid: str) -> None: ...

    def task_done(self, uid: str) -> None: ...


Results = dict[str, ContainerResult]


def next_exit(sandbox: PodSandbox, stops: StopRequests, deadline: float) -> str | None:
    """Name of the next container that exits, or None when the pod must stop."""
    while True:
        name = sandbox.exited()
        if name is not None:
            return name
        if stops.wait(deadline, 0.05):
            return None


def pod_binding(pod: Pod, node_name: str) -> dict[str, Any]:
    """What the scheduler posts to place the pod on a node."""
    meta = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": meta["name"], "uid": meta["uid"]},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
    }


def prepare_containers(
    pod: Pod,
    images: Mapping[str, Image],
    facts: PodFacts,
    objects: ClusterObjects,
    sandbox: PodSandbox,
) -> list[PreparedContainer]:
    """Plan every container and materialise what it needs; PodSpecError at the first
    container that cannot start yet."""

    def files_of(volume: FilesVolume) -> Mapping[str, ProjectedFile]:
        return volume_files(pod, volume, facts, objects)

    prepared = []
    for container in pod["spec"]["containers"]:
        plan = launch_plan(pod, container, images, facts, objects)
        prepared.append(sandbox.prepare(plan, files_of, fs_group(pod)))
    return prepared


class StopRequests:
    """Why a pod must stop early: the runner stops or the pod is gone (`abort`), or the pod
    is deleted gracefully (`delete_requested`). Either wakes the task's waits."""

    def __init__(self) -> None:
        self.abort_reason: str | None = None
        self._delete = threading.Event()
        self._wake = threading.Event()

    def abort(self, reason: str) -> None:
        self.abort_reason = reason
        self._wake.set()

    def delete_requested(self) -> None:
        self._delete.set()
        self._wake.set()

    @property
    def deleting(self) -> bool:
        return self._delete.is_set()

    def wait(self, deadline: float, seconds: float) -> bool:
        """Sleep up to `seconds`; True if the pod must stop (deadline, deletion, abort)."""
        self._wake.wait(timeout=max(0.0, min(seconds, deadline - time.monotonic())))
        self._wake.clear()
        return self.abort_reason is not None or self.deleting or time.monotonic() >= deadline


class PodTask:
    """One pod on the fake node, in a thread of its own."""

    def __init__(self, host: TaskHost, pod: Pod, run: PodRun, pod_dir: Path) -> None:
        self.host = host
        self.pod = pod
        self.run = run
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.sandbox = PodSandbox(pod_dir, host.mount_points)
        self.network = Network(run.netns, bool(pod["spec"].get("hostNetwork")))
        self.stops = StopRequests()
        self._thread = threading.Thread(target=self._main, name=f"pod-{self.name}", daemon=True)
        self._api: KubeRest | None = None
        self._writer: StatusWriter | None = None
        self.start_time = ""
        self.pod_ips: list[str] = []
        self.statuses = ContainerStatuses(())

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def api(self) -> KubeRest:
        assert self._api is not None, "used outside the task's thread"
        return self._api

    def _patch(self, status: dict[str, Any]) -> bool:
        assert self._writer is not None
        return self._writer.patch(status)

    # main ----------------------------------------------------------------------------------
    def _main(self) -> None:
        api = self._api = KubeRest(self.host.kubeconfig)
        self._writer = StatusWriter(api, self.ns, self.name, self.host.note_error)
        try:
            if not self._bind():
                return
            self._run_pod()
        except Exception as exc:
            self.host.note_error(f"{self.ns}/{self.name}: {exc!r}")
            self.run.phase, self.run.reason = "Failed", "PodRunnerError"
            with contextlib.suppress(Exception):
                self._patch(runner_error_status(exc))
        finally:
            self.sandbox.kill_all(grace=0)
            self.run.done.set()
            self.host.task_done(self.uid)
            api.close()

    def _bind(self) -> bool:
        binding = pod_binding(self.pod, self.host.node_name)
        try:
            self.api.post(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/binding", binding)
            return True
        except KubeError as exc:
            # 409: someone else bound it or it is being deleted; 404: gone
            if exc.status not in (404, 409):
                self.host.note_error(f"bind {self.ns}/{self.name}: {exc}")
            self.host.forget_run(self.uid)
            return False

    def _run_pod(self) -> None:
        self.start_time = now_rfc3339()
        limit = active_deadline_seconds(self.pod, self.host.max_runtime_seconds)
        deadline = time.monotonic() + (math.inf if limit is None else limit)
        self.sandbox.create()
        unsupported = unsupported_feature(self.pod)
        if unsupported is not None:
            self.run.phase, self.run.reason = "Failed", "UnsupportedByPodRunner"
            self._patch(unsupported_status(unsupported, self.start_time))
            return
        containers = self._prepare_until_ready(deadline)
        if containers is None:
            self._finish_interrupted(deadline)
            return
        self.statuses = ContainerStatuses([c.name for c in containers])
        self._report_running()
        outcome = self._run_containers(containers, deadline)
        if outcome is None:
            return
        results, crash_looping = outcome
        if crash_looping:
            self.run.reason = "CrashLoopBackOff"
            self._report_running()
            while not self.stops.wait(deadline, 3600.0):
                pass
            self._finish_interrupted(deadline, results, containers)
            return
        self._finish(results, containers)

    # preparing -----------------------------------------------------------------------------
    def _prepare_until_ready(self, deadline: float) -> list[PreparedContainer] | None:
        """Like the kubelet: config errors (a missing Secret, runAsNonRoot vs uid 0) leave the
        pod Pending with a waiting reason and are retried until the deadline (None)."""
        while True:
            try:
                return self._prepare()
            except PodSpecError as exc:
                containers = self.pod["spec"]["containers"]
                self._patch(
                    waiting_status(
                        containers, exc.reason, exc.message, self.start_time, now_rfc3339()
                    )
                )
                if self.stops.wait(deadline, 2.0):
                    return None

    def _prepare(self) -> list[PreparedContainer]:
        self.pod_ips = self.network.pod_ips()
        host = self.host
        facts = PodFacts(
            host.node_name, tuple(self.pod_ips), host.apiserver_host, host.apiserver_port
        )
        objects = ApiObjects(self.api, self.ns, self.name, self.uid)
        return prepare_containers(self.pod, host.images, facts, objects, self.sandbox)

    # running -------------------------------------------------------------------------------
    def _run_containers(
        self, containers: Sequence[PreparedContainer], deadline: float
    ) -> tuple[Results, set[str]] | None:
        """Run until every container is done (restarts included): the results and the
        containers left in CrashLoopBackOff; None when interrupted (already reported)."""
        restart_policy = self.pod["spec"].get("restartPolicy", "Always")
        results: Results = {}
        restarts = dict.fromkeys((c.name for c in containers), 0)
        pending = {c.name: c for c in containers}
        crash_looping: set[str] = set()
        while pending:
            for container in list(pending.values()):
                if not self.sandbox.is_running(container.name):
                    self._launch(container, restarts[container.name])
            self._report_running()
            exited = next_exit(self.sandbox, self.stops, deadline)
            if exited is None:
                self._finish_interrupted(deadline, results, containers)
                return None
            result = self._collect(pending[exited], restarts[exited])
            if restarts_after(restart_policy, result.exit_code):
                self.statuses.will_restart(result)
                if restarts[exited] < MAX_RESTARTS:
                    restarts[exited] += 1
                    time.sleep(min(1.0, 0.25 * 2 ** restarts[exited]))
                    continue
                # the kubelet would back off and restart forever; the pod stays Running with
                # the container waiting (bounded here: no more restarts)
                crash_looping.add(exited)
                self.statuses.crash_looping(exited)
            results[exited] = result
            del pending[exited]
        return results, crash_looping

    def _launch(self, container: PreparedContainer, restart_count: int) -> None:
        pid = self.sandbox.launch(container, self.network, hostname=self.name[:63])
        image = container.plan.image
        self.statuses.started(
            name=container.name,
            image=image,
            image_id=f"podrunner://{image_name(image)}",
            pid=pid,
            restart_count=restart_count,
            now=now_rfc3339(),
        )

    def _collect(self, container: PreparedContainer, restart_count: int) -> ContainerResult:
        exit_code = self.sandbox.reap(container.name)
        plan = container.plan
        message = termination_message(
            container.termination_file, container.log_path, plan.fallback_to_logs, exit_code
        )
        result = ContainerResult(
            name=container.name,
            argv=plan.argv,
            exit_code=exit_code,
            reason=exit_reason(exit_code),
            message=message,
            log_path=container.log_path,
            started_at=self.statuses.started_at(container.name),
            finished_at=now_rfc3339(),
            restart_count=restart_count,
        )
        self.statuses.terminated(result)
        return result

    # reporting -----------------------------------------------------------------------------
    def _report_running(self) -> None:
        self.run.phase = "Running"
        self._patch(
            running_status(
                self.start_time,
                now_rfc3339(),
                self.statuses.reported(),
                all_ready=self.statuses.all_ready(),
                pod_ips=self.pod_ips,
            )
        )

    def _finish(self, results: Results, containers: Sequence[PreparedContainer]) -> None:
        phase = pod_phase(
            [r.exit_code for r in results.values()],
            crash_looping=self.run.reason == "CrashLoopBackOff",
        )
        self.run.containers = [results[c.name] for c in containers if c.name in results]
        self.run.phase = phase
        self._patch(terminal_status(phase, self.start_time, now_rfc3339(), self.statuses.every()))
        if self.stops.deleting:
            self.host.confirm_delete(self.pod)

    def _finish_interrupted(
        self,
        deadline: float,
        results: Results | None = None,
        containers: Sequence[PreparedContainer] = (),
    ) -> None:
        """Deadline, deletion or runner stop: kill, then report like the kubelet."""
        if self.stops.abort_reason == "pod deleted":
            self.sandbox.kill_all(grace=0)
            self.run.phase, self.run.reason = "Failed", "Deleted"
            return
        grace = 0.0 if self.stops.abort_reason else kill_grace_seconds(self.pod)
        self.sandbox.kill_all(grace=grace)
        collected = dict(results or {})
        for container in containers:
            if self.sandbox.is_running(container.name):
                restart_count = self.statuses.restart_count(container.name)
                collected[container.name] = self._collect(container, restart_count)
        self.run.containers = [collected[c.name] for c in containers if c.name in collected]
        self.run.phase = "Failed"
        status = terminal_status(
            "Failed",
            self.start_time,
            now_rfc3339(),
            self.statuses.every() if containers else None,
        )
        if self.stops.deleting:
            self._patch(status)
            self.host.confirm_delete(self.pod)
            return
        stopped = interruption(self.stops.abort_reason, time.monotonic() >= deadline)
        if stopped is not None:
            self.run.reason = stopped[0]
            status["reason"], status["message"] = stopped
        self._patch(status)
