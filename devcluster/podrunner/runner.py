"""`PodRunner`: the fake node. Watches for unscheduled pods, binds them to its Node and
hands each to a `PodTask`."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devcluster.kubetools import KubeError, KubeRest
from devcluster.podrunner.podspec import IMAGES, Image, Pod
from devcluster.podrunner.sandbox import MountPoints
from devcluster.podrunner.status import now_rfc3339
from devcluster.podrunner.task import PodRun, PodTask
from devcluster.runtime import RuntimeDir

log = logging.getLogger("devcluster.podrunner")

NetnsForPod = Callable[[Pod], "str | None"]


def is_unscheduled(pod: Pod) -> bool:
    """A pod the default scheduler would place: Pending, no node, no gates."""
    spec = pod["spec"]
    return not (
        spec.get("nodeName")
        or pod.get("status", {}).get("phase", "Pending") != "Pending"
        or spec.get("schedulingGates")
        or spec.get("schedulerName", "default-scheduler") != "default-scheduler"
    )


def unschedulable_status(
    pod: Pod, node_labels: Mapping[str, str], now: str
) -> dict[str, Any] | None:
    """The PodScheduled=False status kube-scheduler writes for a pod whose nodeSelector this
    node does not match (the only scheduling predicate emulated); None when it fits."""
    selector = pod["spec"].get("nodeSelector") or {}
    if all(node_labels.get(key) == value for key, value in selector.items()):
        return None
    return {
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node "
                    "affinity/selector.",
                    "lastTransitionTime": now,
                }
            ]
        }
    }


def node_object(node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node_name,
            "labels": {
                "kubernetes.io/hostname": node_name,
                "kubernetes.io/os": "linux",
                "traceroute-operator.test/pod-runner": "true",
            },
        },
    }


def node_ready_status(node_name: str, now: str) -> dict[str, Any]:
    return {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "PodRunnerReady",
                    "message": "test pod runner (no container runtime)",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node_name},
            ],
        }
    }


class PodRunner:
    """Binds and runs pending pods that match `namespace`/`label_selector`.

    `kubeconfig` must be allowed to bind, read secrets and write pod status (the admin one).
    Use as a context manager or `start()`/`stop()`; `stop()` kills what still runs and marks
    those pods Failed so namespaces can be deleted afterwards.
    """

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        netns_for_pod: NetnsForPod | None = None,
        node_name: str | None = None,
        max_runtime_seconds: float | None = 300.0,
        images: Mapping[str, Image] | None = None,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        with KubeRest(self.kubeconfig) as api:
            # what kube-proxy would map the `kubernetes` Service to
            server = urllib.parse.urlsplit(api.server)
        self.apiserver_host = server.hostname or "127.0.0.1"
        self.apiserver_port = server.port or 443
        self.namespace = namespace
        self.label_selector = label_selector
        self.netns_for_pod = netns_for_pod
        self.node_name = node_name or f"podrunner-{uuid.uuid4().hex[:6]}"
        self.max_runtime_seconds = max_runtime_seconds
        self.images = dict(IMAGES if images is None else images)
        self.runs: dict[str, PodRun] = {}
        self._unschedulable: set[str] = set()  # pods told so (once each)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tasks: dict[str, PodTask] = {}
        self._watcher: threading.Thread | None = None
        self.mount_points = MountPoints()
        self.rundir: RuntimeDir | None = None
        self.errors: list[str] = []

    # lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PodRunner:
        self.rundir = RuntimeDir("podrunner", owner_pid=os.getpid())
        (self.rundir.path / "pods").mkdir()
        self.mount_points.rundir = self.rundir
        with KubeRest(self.kubeconfig) as api:
            self._ensure_node(api)
        self._stop.clear()
        self._watcher = threading.Thread(
            target=self._watch_loop, name=f"podrunner-{self.node_name}", daemon=True
        )
        self._watcher.start()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
            self._watcher = None
        with self._lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            task.stops.abort("pod runner stopped")
        deadline = time.monotonic() + timeout
        for task in tasks:
            task.join(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(Exception), KubeRest(self.kubeconfig) as api:
            api.delete(f"/api/v1/nodes/{self.node_name}")
        if self.rundir is not None:
            for path in self.mount_points.created:
                self.rundir.note_created_path(path)
            self.rundir.remove(grace_seconds=2)
            self.rundir = None
            self.mount_points.rundir = None

    # test helpers --------------------------------------------------------------------------
    def wait_for_pod(self, namespace: str, name: str, timeout: float = 60.0) -> PodRun:
        """Block until the pod `namespace/name` has finished running here."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                run = next(
                    (r for r in self.runs.values() if (r.namespace, r.name) == (namespace, name)),
                    None,
                )
            if run is not None and run.done.wait(timeout=max(0.0, deadline - time.monotonic())):
                return run
            time.sleep(0.1)
        raise TimeoutError(
            f"pod {namespace}/{name} not finished by the pod runner within {timeout:.0f}s"
            + (f"; runner errors: {self.errors[-3:]}" if self.errors else "")
        )

    def finished_runs(self) -> list[PodRun]:
        with self._lock:
            return [r for r in self.runs.values() if r.done.is_set()]

    # what the tasks call back (TaskHost) ---------------------------------------------------
    def note_error(self, text: str) -> None:
        log.warning("pod runner %s: %s", self.node_name, text)
        with self._lock:
            self.errors.append(text)
            del self.errors[:-50]

    def forget_run(self, uid: str) -> None:
        """The pod was not ours to run after all (bound elsewhere, or gone)."""
        with self._lock:
            self.runs.pop(uid, None)

    def task_done(self, uid: str) -> None:
        with self._lock:
            self._tasks.pop(uid, None)

    def confirm_delete(self, pod: Pod) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(KubeError), KubeRest(self.kubeconfig) as api:
            api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )

    # watching ------------------------------------------------------------------------------
    def _pods_path(self) -> str:
        if self.namespace:
            return f"/api/v1/namespaces/{self.namespace}/pods"
        return "/api/v1/pods"

    def _watch_loop(self) -> None:
        api = KubeRest(self.kubeconfig)
        params = {"labelSelector": self.label_selector} if self.label_selector else {}
        try:
            while not self._stop.is_set():
                try:
                    self._list_and_watch(api, params)
                except Exception as exc:
                    if not self._stop.is_set():
                        self.note_error(f"watch: {exc!r}")
                        self._stop.wait(1.0)
        finally:
            api.close()

    def _list_and_watch(self, api: KubeRest, params: Mapping[str, str]) -> None:
        listing = api.get(self._pods_path(), **params)
        for pod in listing.get("items", []):
            self._consider(pod, "ADDED")
        rv = listing["metadata"]["resourceVersion"]
        # short watches: stop() is honoured within a few seconds, and every round starts
        # with a fresh list (a resync)
        for event in api.watch(self._pods_path(), resource_version=rv, timeout_seconds=3, **params):
            if self._stop.is_set():
                break
            if event.get("type") == "ERROR":
                break  # e.g. 410 Gone: relist
            if event.get("type") != "BOOKMARK":
                self._consider(event["object"], event["type"])

    def _consider(self, pod: Pod, event_type: str) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            task = self._tasks.get(uid)
        if event_type == "DELETED":
            if task is not None:
                task.stops.abort("pod deleted")
            return
        if meta.get("deletionTimestamp"):
            if task is not None:
                task.stops.delete_requested()
            elif pod["spec"].get("nodeName") == self.node_name:
                # bound here but nothing runs (it already finished): confirm the deletion
                self.confirm_delete(pod)
            return
        if task is not None or uid in self.runs or not is_unscheduled(pod):
            return
        labels = node_object(self.node_name)["metadata"]["labels"]
        if (refused := unschedulable_status(pod, labels, now_rfc3339())) is not None:
            if uid not in self._unschedulable:
                self._unschedulable.add(uid)
                with contextlib.suppress(KubeError), KubeRest(self.kubeconfig) as api:
                    api.merge_patch(
                        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                        refused,
                    )
            return
        self._start_task(pod)

    def _start_task(self, pod: Pod) -> None:
        meta = pod["metadata"]
        netns = self.netns_for_pod(pod) if self.netns_for_pod else None
        run = PodRun(meta["namespace"], meta["name"], meta["uid"], netns)
        assert self.rundir is not None
        pod_dir = self.rundir.path / "pods" / f"{run.namespace}.{run.name}.{run.uid[:8]}"
        task = PodTask(self, pod, run, pod_dir)
        with self._lock:
            self.runs[run.uid] = run
            self._tasks[run.uid] = task
        task.start()

    def _ensure_node(self, api: KubeRest) -> None:
        try:
            api.post("/api/v1/nodes", node_object(self.node_name))
        except KubeError as exc:
            if exc.status != 409:
                raise
        api.merge_patch(
            f"/api/v1/nodes/{self.node_name}/status",
            node_ready_status(self.node_name, now_rfc3339()),
        )
