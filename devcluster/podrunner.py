"""Test-only stand-in for kube-scheduler + kubelet + container runtime.

No container engine exists on this machine. The pod runner watches pods that no scheduler has
placed, binds them to its own (fake) Node and runs each container's command as a local
process the way a kubelet would:

- the image's entrypoint maps to the project's console scripts in the shared venv
  (`IMAGES`), `python` to the venv interpreter;
- the pod's user/group (`runAsUser`, `runAsGroup`, `supplementalGroups`, `fsGroup`), the
  container runtime's default capability set minus `drop` plus `add` (so a non-root user
  ends up with none, as on a real node), `no_new_privs` for `allowPrivilegeEscalation: false`,
  a read-only root for `readOnlyRootFilesystem`; all applied with `setpriv`;
- env (literal, fieldRef, secretKeyRef/configMapKeyRef, envFrom) with `$(VAR)` expansion;
- volumes (secret, configMap, emptyDir, projected incl. a bound ServiceAccount token,
  downwardAPI, hostPath) materialised per pod and bind-mounted in a private mount
  namespace, as is a per-container file over `terminationMessagePath`;
- network: the namespace named by `netns_for_pod(pod)` (the tests pass a lab host), else the
  host for `hostNetwork: true`, else a fresh empty namespace with only loopback. Pod sysctls
  (`net.*` only) are applied inside it;
- afterwards it writes the status a kubelet writes: phase Running then Succeeded/Failed,
  `containerStatuses[].state.terminated` (exitCode, reason, startedAt, finishedAt, message =
  the last 4096 bytes of the termination message file, or the log tail for
  `FallbackToLogsOnError`), `activeDeadlineSeconds` (DeadlineExceeded), restarts for
  `OnFailure`/`Always` (bounded), and graceful deletion (kill, then delete with grace 0).

Not emulated: images (the host filesystem is the container's), resource limits, probes,
init/sidecar/ephemeral containers (such pods fail with reason UnsupportedByPodRunner).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcluster.kubetools import KubeError, KubeRest
from devcluster.paths import ROOT
from devcluster.runtime import VENV_BIN, RuntimeDir

# What stands in for the container image: the venv and the checkout its editable install
# points at. A pod volume mounted over a parent of them (an emptyDir at /tmp while the
# checkout is a clone under /tmp) would hide the image's code, so they are mounted back.
IMAGE_PATHS = (ROOT, VENV_BIN.parent.resolve())

log = logging.getLogger(__name__)

Pod = dict[str, Any]
NetnsForPod = Callable[[Pod], "str | None"]

# returned by netns_for_pod: run the pod in the host's network namespace (e.g. an operator
# pod that must reach the apiserver on loopback, as a kube-proxy DNAT would give it)
HOST_NETNS = "<host>"

TERMINATION_MESSAGE_MAX_BYTES = 4096  # kubelet: MaxContainerTerminationMessageLength
FALLBACK_LOG_LINES = 80  # kubelet: MaxContainerTerminationMessageLogLines
FALLBACK_LOG_BYTES = 2048  # kubelet: MaxContainerTerminationMessageLogLength
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
CONTAINER_PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_RESTARTS = 3
MAX_KILL_GRACE_SECONDS = 10.0

# containerd's default capability set for a container
DEFAULT_CAPABILITIES = frozenset(
    {
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    }
)


@dataclass(frozen=True)
class Image:
    """What the runner knows of an image: its ENTRYPOINT/CMD and default USER."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: int = 0
    group: int = 0


# keyed by the image's repository basename (registry, tag and digest stripped)
IMAGES: dict[str, Image] = {
    "traceroute-probe": Image(
        entrypoint=(str(VENV_BIN / "traceroute-probe"),), user=65534, group=65534
    ),
    "traceroute-operator": Image(
        entrypoint=(str(VENV_BIN / "traceroute-operator"),), user=65534, group=65534
    ),
    "python": Image(cmd=(str(VENV_BIN / "python"),)),
}

COMMAND_ALIASES = {
    "python": str(VENV_BIN / "python"),
    "python3": str(VENV_BIN / "python"),
}


class PodSpecError(Exception):
    """The pod cannot be started as specified (kubelet: CreateContainerConfigError etc.)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_name(image: str) -> str:
    """`registry:5000/org/traceroute-probe:1.2@sha256:..` -> `traceroute-probe`."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined vars replaced, `$$` escapes, unknown kept."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(sub, text)


def read_termination_message(path: Path) -> str:
    """The last TERMINATION_MESSAGE_MAX_BYTES of the file, as the kubelet reads it."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TERMINATION_MESSAGE_MAX_BYTES))
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def log_tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    lines = data.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
    return b"".join(lines)[-FALLBACK_LOG_BYTES:].decode(errors="replace")


def _merged_security_context(pod: Pod, container: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(pod["spec"].get("securityContext") or {})
    merged.update(container.get("securityContext") or {})
    return merged


def capability_set(security_context: Mapping[str, Any]) -> set[str]:
    """Bounding set of the container: runtime defaults - drop + add (privileged: all)."""
    if security_context.get("privileged"):
        return {"ALL"}
    caps = security_context.get("capabilities") or {}
    drop = {c.upper().removeprefix("CAP_") for c in caps.get("drop") or []}
    add = {c.upper().removeprefix("CAP_") for c in caps.get("add") or []}
    base = set() if "ALL" in drop else set(DEFAULT_CAPABILITIES - drop)
    return base | add


def setpriv_args(
    uid: int,
    gid: int,
    groups: Sequence[int],
    capabilities: set[str],
    no_new_privs: bool,
) -> list[str]:
    if "ALL" in capabilities:
        bounding = "+all"
    else:
        bounding = ",".join(["-all", *(f"+{c.lower()}" for c in sorted(capabilities))])
    args = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    args.append(f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups")
    # inheritable/ambient stay empty: a non-root process keeps no capability across exec,
    # exactly like a container without ambient capabilities
    args += ["--inh-caps=-all", f"--bounding-set={bounding}"]
    if no_new_privs:
        args.append("--no-new-privs")
    # the pod process dies with the runner even if the runner is SIGKILLed
    args += ["--pdeathsig=KILL"]
    return args


@dataclass
class ContainerResult:
    name: str
    argv: list[str]
    exit_code: int
    reason: str
    message: str
    log_path: Path
    started_at: str
    finished_at: str
    restart_count: int = 0


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


@dataclass
class _Mount:
    source: Path
    target: str
    read_only: bool


@dataclass
class _Plan:
    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    groups: list[int]
    capabilities: set[str]
    no_new_privs: bool
    read_only_root: bool
    working_dir: str
    mounts: list[_Mount]
    termination_file: Path
    fallback_to_logs: bool
    log_path: Path
    sysctls: list[tuple[str, str]]


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
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tasks: dict[str, _PodTask] = {}
        self._watcher: threading.Thread | None = None
        self._created_paths: set[Path] = set()
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
            task.abort("pod runner stopped")
        deadline = time.monotonic() + timeout
        for task in tasks:
            task.join(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(Exception), KubeRest(self.kubeconfig) as api:
            api.delete(f"/api/v1/nodes/{self.node_name}")
        if self.rundir is not None:
            for path in self._created_paths:
                self.rundir.note_created_path(path)
            self.rundir.remove(grace_seconds=2)
            self.rundir = None

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
                    listing = api.get(self._pods_path(), **params)
                    for pod in listing.get("items", []):
                        self._consider(pod, "ADDED")
                    rv = listing["metadata"]["resourceVersion"]
                    # short watches: stop() is honoured within a few seconds, and every
                    # round starts with a fresh list (a resync)
                    for event in api.watch(
                        self._pods_path(), resource_version=rv, timeout_seconds=3, **params
                    ):
                        if self._stop.is_set():
                            break
                        if event.get("type") == "ERROR":
                            break  # e.g. 410 Gone: relist
                        if event.get("type") != "BOOKMARK":
                            self._consider(event["object"], event["type"])
                except Exception as exc:
                    if not self._stop.is_set():
                        self._note_error(f"watch: {exc!r}")
                        self._stop.wait(1.0)
        finally:
            api.close()

    def _note_error(self, text: str) -> None:
        log.warning("pod runner %s: %s", self.node_name, text)
        with self._lock:
            self.errors.append(text)
            del self.errors[:-50]

    def _consider(self, pod: Pod, event_type: str) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        with self._lock:
            task = self._tasks.get(uid)
        if event_type == "DELETED":
            if task is not None:
                task.abort("pod deleted")
            return
        if meta.get("deletionTimestamp"):
            if task is not None:
                task.delete_requested()
            elif spec.get("nodeName") == self.node_name:
                # bound here but nothing runs (it already finished): confirm the deletion
                self._confirm_delete(pod)
            return
        if task is not None or uid in self.runs:
            return
        if (
            spec.get("nodeName")
            or pod.get("status", {}).get("phase", "Pending") != "Pending"
            or spec.get("schedulingGates")
            or spec.get("schedulerName", "default-scheduler") != "default-scheduler"
        ):
            return
        netns = self.netns_for_pod(pod) if self.netns_for_pod else None
        run = PodRun(meta["namespace"], meta["name"], uid, netns)
        task = _PodTask(self, pod, run)
        with self._lock:
            self.runs[uid] = run
            self._tasks[uid] = task
        task.start()

    def _task_done(self, uid: str) -> None:
        with self._lock:
            self._tasks.pop(uid, None)

    def _confirm_delete(self, pod: Pod) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(KubeError), KubeRest(self.kubeconfig) as api:
            api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )

    def _ensure_node(self, api: KubeRest) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "traceroute-operator.test/pod-runner": "true",
                },
            },
        }
        try:
            api.post("/api/v1/nodes", node)
        except KubeError as exc:
            if exc.status != 409:
                raise
        api.merge_patch(
            f"/api/v1/nodes/{self.node_name}/status",
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "PodRunnerReady",
                            "message": "test pod runner (no container runtime)",
                            "lastHeartbeatTime": now_rfc3339(),
                            "lastTransitionTime": now_rfc3339(),
                        }
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": self.node_name},
                    ],
                }
            },
        )

    def _create_mount_point(self, target: str, is_dir: bool) -> None:
        """Mount targets must exist on the host; create missing ones (removed on stop)."""
        path = Path(target)
        if path.exists():
            return
        missing = [path]
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        if is_dir:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        with self._lock:
            self._created_paths.update(missing)
        if self.rundir is not None:
            for created in missing:
                self.rundir.note_created_path(created)


class _PodTask:
    """One pod on the fake node: bind, prepare, run, report."""

    def __init__(self, runner: PodRunner, pod: Pod, run: PodRun) -> None:
        self.runner = runner
        self.pod = pod
        self.run = run
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.pod_path = f"/api/v1/namespaces/{self.ns}/pods/{self.name}"
        assert runner.rundir is not None
        self.dir = runner.rundir.path / "pods" / f"{self.ns}.{self.name}.{self.uid[:8]}"
        self._abort_reason: str | None = None
        self._delete = threading.Event()
        self._wake = threading.Event()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._thread = threading.Thread(target=self._main, name=f"pod-{self.name}", daemon=True)
        self.api: KubeRest | None = None
        self.start_time = ""
        self.statuses: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def abort(self, reason: str) -> None:
        self._abort_reason = reason
        self._wake.set()

    def delete_requested(self) -> None:
        self._delete.set()
        self._wake.set()

    # main ----------------------------------------------------------------------------------
    def _main(self) -> None:
        self.api = KubeRest(self.runner.kubeconfig)
        try:
            if not self._bind():
                return
            self._run_pod()
        except Exception as exc:
            self.runner._note_error(f"{self.ns}/{self.name}: {exc!r}")
            self.run.phase, self.run.reason = "Failed", "PodRunnerError"
            with contextlib.suppress(Exception):
                self._patch_status(
                    {"phase": "Failed", "reason": self.run.reason, "message": repr(exc)[:1000]}
                )
        finally:
            self._kill_all(grace=0)
            self.run.done.set()
            self.runner._task_done(self.uid)
            self.api.close()

    def _bind(self) -> bool:
        assert self.api is not None
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": self.name, "uid": self.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.runner.node_name},
        }
        try:
            self.api.post(f"{self.pod_path}/binding", binding)
            return True
        except KubeError as exc:
            # 409: someone else bound it or it is being deleted; 404: gone
            if exc.status not in (404, 409):
                self.runner._note_error(f"bind {self.ns}/{self.name}: {exc}")
            with self.runner._lock:
                self.runner.runs.pop(self.uid, None)
            return False

    def _deadline(self) -> float:
        spec = self.pod["spec"]
        limit = self.runner.max_runtime_seconds
        if spec.get("activeDeadlineSeconds") is not None:
            active = float(spec["activeDeadlineSeconds"])
            limit = active if limit is None else min(limit, active)
        return time.monotonic() + (math.inf if limit is None else limit)

    def _run_pod(self) -> None:
        spec = self.pod["spec"]
        self.start_time = now_rfc3339()
        deadline = self._deadline()
        self.dir.mkdir(parents=True)
        if spec.get("initContainers") or spec.get("ephemeralContainers"):
            self._finish_unsupported("init and ephemeral containers are not emulated")
            return
        # like the kubelet: config errors (a missing Secret, runAsNonRoot vs uid 0) leave the
        # pod Pending with a waiting reason and are retried until the deadline
        plans: list[_Plan] | None = None
        while plans is None:
            try:
                plans = [self._plan(c) for c in spec["containers"]]
            except PodSpecError as exc:
                self._report_waiting(exc.reason, exc.message)
                if self._wait_or_interrupt(deadline, 2.0):
                    self._finish_interrupted(deadline)
                    return
        netns_ip = self._pod_ips()
        self._patch_status(self._running_status(plans, netns_ip))
        restart_policy = spec.get("restartPolicy", "Always")
        results: dict[str, ContainerResult] = {}
        restarts = dict.fromkeys((p.name for p in plans), 0)
        pending = {p.name: p for p in plans}
        crash_looping: set[str] = set()
        while pending:
            for plan in list(pending.values()):
                if plan.name not in self._procs:
                    self._launch(plan, restarts[plan.name])
            self._patch_status(self._running_status(plans, netns_ip))
            exited = self._wait_any(deadline)
            if exited is None:
                self._finish_interrupted(deadline, results, plans)
                return
            plan = pending[exited]
            result = self._collect(plan, restarts[plan.name])
            retry = restart_policy == "Always" or (
                restart_policy == "OnFailure" and result.exit_code != 0
            )
            if retry:
                self.statuses[plan.name]["lastState"] = {"terminated": self._terminated(result)}
            if retry and restarts[plan.name] < MAX_RESTARTS:
                restarts[plan.name] += 1
                time.sleep(min(1.0, 0.25 * 2 ** restarts[plan.name]))
                continue
            results[plan.name] = result
            del pending[plan.name]
            if retry:
                # the kubelet would back off and restart forever; the pod stays Running with
                # the container waiting (bounded here: no more restarts)
                crash_looping.add(plan.name)
                self.statuses[plan.name]["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off restarting failed container {plan.name}",
                    }
                }
        if crash_looping:
            self.run.reason = "CrashLoopBackOff"
            self._patch_status(self._running_status(plans, netns_ip))
            while not self._wait_or_interrupt(deadline, 3600.0):
                pass
            self._finish_interrupted(deadline, results, plans)
            return
        self._finish(results, plans)

    def _pod_ips(self) -> list[str]:
        if self.run.netns == HOST_NETNS or (
            self.run.netns is None and self.pod["spec"].get("hostNetwork")
        ):
            return ["127.0.0.1"]
        return _netns_addresses(self.run.netns)

    # preparing -----------------------------------------------------------------------------
    def _plan(self, container: Mapping[str, Any]) -> _Plan:
        pod, spec = self.pod, self.pod["spec"]
        name = container["name"]
        image_ref = container.get("image", "")
        image = self.runner.images.get(image_name(image_ref))
        sc = _merged_security_context(pod, container)

        env = self._environment(container, sc)
        command = [expand_vars(a, env) for a in container.get("command") or []]
        args = [expand_vars(a, env) for a in container.get("args") or []]
        if not command:
            if image is None:
                raise PodSpecError("ErrImagePull", f"pod runner knows no image {image_ref!r}")
            command = list(image.entrypoint)
            if not args and not container.get("command"):
                args = list(image.cmd)
        argv = command + args
        if not argv:
            raise PodSpecError("CreateContainerError", "no command specified")
        argv[0] = self._resolve_executable(argv[0])

        uid = sc.get("runAsUser", image.user if image else 0)
        gid = sc.get("runAsGroup", image.group if image else 0)
        if sc.get("runAsNonRoot") and uid == 0:
            raise PodSpecError(
                "CreateContainerConfigError",
                "container has runAsNonRoot and image will run as root",
            )
        pod_sc = spec.get("securityContext") or {}
        groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
        if pod_sc.get("fsGroup") is not None:
            groups.append(int(pod_sc["fsGroup"]))

        cdir = self.dir / "containers" / name
        cdir.mkdir(parents=True, exist_ok=True)
        termination_file = cdir / "termination-log"
        termination_file.touch()
        termination_file.chmod(0o666)  # the kubelet does the same
        mounts = self._volume_mounts(container, groups)
        message_path = container.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)
        mounts.append(_Mount(termination_file, message_path, read_only=False))
        policy = container.get("terminationMessagePolicy", "File")
        sysctls = []
        for sysctl in pod_sc.get("sysctls") or []:
            key = str(sysctl["name"])
            if not re.fullmatch(r"net(\.[A-Za-z0-9_-]+)+", key):
                raise PodSpecError("SysctlForbidden", f"{key} is not a network sysctl")
            sysctls.append((key, str(sysctl["value"])))
        return _Plan(
            name=name,
            image=image_ref,
            argv=argv,
            env=env,
            uid=int(uid),
            gid=int(gid),
            groups=groups,
            capabilities=capability_set(sc),
            # Kubernetes sets no_new_privs only when allowPrivilegeEscalation is false
            no_new_privs=sc.get("allowPrivilegeEscalation") is False,
            read_only_root=bool(sc.get("readOnlyRootFilesystem")),
            working_dir=container.get("workingDir") or "/",
            mounts=mounts,
            termination_file=termination_file,
            fallback_to_logs=policy == "FallbackToLogsOnError",
            log_path=cdir / "output.log",
            sysctls=sysctls,
        )

    @staticmethod
    def _resolve_executable(arg0: str) -> str:
        if arg0 in COMMAND_ALIASES:
            return COMMAND_ALIASES[arg0]
        base = os.path.basename(arg0)
        if (VENV_BIN / base).is_file() and (not os.path.isabs(arg0) or not Path(arg0).exists()):
            # an image path like /usr/local/bin/traceroute-probe: the venv has it
            return str(VENV_BIN / base)
        if os.path.isabs(arg0):
            if Path(arg0).exists():
                return arg0
            raise PodSpecError("StartError", f"executable {arg0} not found")
        found = shutil.which(arg0, path=CONTAINER_PATH)
        if not found:
            raise PodSpecError("StartError", f"executable {arg0!r} not found in $PATH")
        return found

    def _field(self, field_path: str) -> str:
        pod = self.pod
        meta = pod["metadata"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.runner.node_name,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.hostIP": "127.0.0.1",
            "status.podIP": next(iter(self._pod_ips()), ""),
        }
        if field_path in simple:
            return str(simple[field_path])
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", field_path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        raise PodSpecError("CreateContainerConfigError", f"unsupported fieldRef {field_path}")

    def _object_data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """Decoded data of a Secret or ConfigMap in the pod's namespace."""
        assert self.api is not None
        plural = "secrets" if kind == "Secret" else "configmaps"
        try:
            obj = self.api.get(f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
        except KubeError as exc:
            if exc.status == 404:
                if optional:
                    return None
                raise PodSpecError(
                    "CreateContainerConfigError", f'{kind.lower()} "{name}" not found'
                ) from exc
            raise
        out: dict[str, str] = {}
        if kind == "Secret":
            for key, value in (obj.get("data") or {}).items():
                out[key] = base64.b64decode(value).decode("latin-1")
        else:
            out.update(obj.get("data") or {})
            for key, value in (obj.get("binaryData") or {}).items():
                out[key] = base64.b64decode(value).decode("latin-1")
        return out

    def _environment(self, container: Mapping[str, Any], sc: Mapping[str, Any]) -> dict[str, str]:
        uid = sc.get("runAsUser", 0)
        host, port = self.runner.apiserver_host, self.runner.apiserver_port
        env: dict[str, str] = {
            "PATH": CONTAINER_PATH,
            "HOSTNAME": self.name[:63],
            "HOME": "/root" if uid == 0 else "/",
            # the kubelet always injects the `kubernetes` Service; in-cluster clients use it
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
        }
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    ref = source[key]
                    data = self._object_data(kind, ref["name"], bool(ref.get("optional")))
                    for k, v in (data or {}).items():
                        env[prefix + k] = v
        for var in container.get("env") or []:
            name = var["name"]
            if "value" in var:
                env[name] = expand_vars(var["value"], env)
                continue
            value_from = var.get("valueFrom")
            if not value_from:
                env[name] = ""
            elif "fieldRef" in value_from:
                env[name] = self._field(value_from["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
                kind = "Secret" if "secretKeyRef" in value_from else "ConfigMap"
                ref = value_from["secretKeyRef" if kind == "Secret" else "configMapKeyRef"]
                optional = bool(ref.get("optional"))
                data = self._object_data(kind, ref["name"], optional)
                if data is None or ref["key"] not in data:
                    if optional:
                        continue
                    raise PodSpecError(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in {kind} {self.ns}/{ref['name']}",
                    )
                env[name] = data[ref["key"]]
            elif "resourceFieldRef" in value_from:
                env[name] = "0"
        return env

    def _volume_mounts(self, container: Mapping[str, Any], groups: Sequence[int]) -> list[_Mount]:
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes") or []}
        mounts = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise PodSpecError("CreateContainerConfigError", f"no volume {mount['name']}")
            source = self._materialize(volume, groups)
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts.append(_Mount(source, mount["mountPath"], bool(mount.get("readOnly"))))
        return mounts

    def _materialize(self, volume: Mapping[str, Any], groups: Sequence[int]) -> Path:
        if "hostPath" in volume:
            return Path(str(volume["hostPath"]["path"]))
        target = self.dir / "volumes" / str(volume["name"])
        if target.exists():
            return target
        target.mkdir(parents=True)
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        files: dict[str, tuple[bytes, int]] = {}
        if "emptyDir" in volume:
            target.chmod(0o777)
            return target
        if "secret" in volume or "configMap" in volume:
            kind = "Secret" if "secret" in volume else "ConfigMap"
            src = volume["secret" if kind == "Secret" else "configMap"]
            ref_name = src.get("secretName") if kind == "Secret" else src.get("name")
            mode = int(src.get("defaultMode", 0o644))
            self._project(files, kind, str(ref_name), src, mode)
        elif "projected" in volume:
            mode = int(volume["projected"].get("defaultMode", 0o644))
            for source in volume["projected"].get("sources") or []:
                self._projected_source(files, source, mode)
        elif "downwardAPI" in volume:
            mode = int(volume["downwardAPI"].get("defaultMode", 0o644))
            for item in volume["downwardAPI"].get("items") or []:
                value = self._field(item["fieldRef"]["fieldPath"])
                files[item["path"]] = (value.encode(), int(item.get("mode", mode)))
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise PodSpecError("CreateContainerConfigError", f"volume type {kinds} not emulated")
        target.chmod(0o755)
        for rel, (data, file_mode) in files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if fs_group is not None:
                os.chown(path, 0, int(fs_group))
            # the kubelet makes files group-readable for fsGroup
            path.chmod(file_mode | (0o040 if fs_group is not None else 0))
        return target

    def _project(
        self,
        files: dict[str, tuple[bytes, int]],
        kind: str,
        name: str,
        src: Mapping[str, Any],
        mode: int,
    ) -> None:
        data = self._object_data(kind, name, bool(src.get("optional")))
        if data is None:
            return
        items = src.get("items")
        if items:
            for item in items:
                if item["key"] not in data:
                    if src.get("optional"):
                        continue
                    raise PodSpecError(
                        "CreateContainerConfigError", f"key {item['key']} not in {kind} {name}"
                    )
                files[item["path"]] = (
                    data[item["key"]].encode("latin-1"),
                    int(item.get("mode", mode)),
                )
        else:
            for key, value in data.items():
                files[key] = (value.encode("latin-1"), mode)

    def _projected_source(
        self, files: dict[str, tuple[bytes, int]], source: Mapping[str, Any], mode: int
    ) -> None:
        assert self.api is not None
        if "secret" in source:
            self._project(files, "Secret", source["secret"]["name"], source["secret"], mode)
        elif "configMap" in source:
            src = source["configMap"]
            self._project(files, "ConfigMap", src["name"], src, mode)
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                value = self._field(item["fieldRef"]["fieldPath"])
                files[item["path"]] = (value.encode(), int(item.get("mode", mode)))
        elif "serviceAccountToken" in source:
            src = source["serviceAccountToken"]
            sa = self.pod["spec"].get("serviceAccountName", "default")
            spec: dict[str, Any] = {
                "expirationSeconds": int(src.get("expirationSeconds", 3607)),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": self.uid,
                },
            }
            if src.get("audience"):
                spec["audiences"] = [src["audience"]]
            response = self.api.post(
                f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            )
            files[src["path"]] = (response["status"]["token"].encode(), mode)

    # running -------------------------------------------------------------------------------
    def _launch(self, plan: _Plan, restart_count: int) -> None:
        for mount in plan.mounts:
            self.runner._create_mount_point(mount.target, mount.source.is_dir())
        plan.termination_file.write_bytes(b"")
        script = ["set -e"]
        netns = None if self.run.netns == HOST_NETNS else self.run.netns
        host_network = bool(self.pod["spec"].get("hostNetwork"))
        isolated = self.run.netns is None and not host_network
        if isolated:
            script.append("ip link set lo up")
        if netns is not None or isolated:
            # never on the host: only inside the pod's (or the lab's) network namespace
            for key, value in plan.sysctls:
                proc_path = "/proc/sys/" + key.replace(".", "/")
                script.append(f"printf '%s' {shlex.quote(value)} > {shlex.quote(proc_path)}")
        if not host_network:
            script.append(f"hostname {shlex.quote(self.name[:63])}")
        shadowed = [
            path
            for path in IMAGE_PATHS
            if any(path.is_relative_to(mount.target) for mount in plan.mounts)
        ]
        stages = []
        for index, path in enumerate(shadowed):
            stage = plan.termination_file.parent / f"image-{index}"
            stage.mkdir(exist_ok=True)
            stages.append((shlex.quote(str(stage)), shlex.quote(str(path))))
            script.append(f"mount --bind {stages[-1][1]} {stages[-1][0]}")
        for mount in plan.mounts:
            source, target = shlex.quote(str(mount.source)), shlex.quote(mount.target)
            script.append(f"mount --bind {source} {target}")
            if mount.read_only:
                script.append(f"mount -o remount,bind,ro {target}")
        for stage_path, image_path in stages:
            script.append(f"mkdir -p {image_path}")
            script.append(f"mount --bind {stage_path} {image_path}")
            script.append(f"mount -o remount,bind,ro {image_path}")
        if plan.read_only_root:
            script.append("mount -o remount,bind,ro /")
        script.append(f"cd {shlex.quote(plan.working_dir)}")
        setpriv = setpriv_args(
            plan.uid, plan.gid, plan.groups, plan.capabilities, plan.no_new_privs
        )
        script.append(f'exec {shlex.join(setpriv)} -- "$@"')

        unshare = ["unshare", "--mount", "--propagation=private"]
        if not host_network:
            unshare.append("--uts")
        if isolated:
            unshare.append("--net")
        prefix = ["ip", "netns", "exec", netns] if netns else []
        argv = [*prefix, *unshare, "--", "/bin/sh", "-c", "\n".join(script), "sh", *plan.argv]
        with open(plan.log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=plan.env,
                start_new_session=True,
            )
        self._procs[plan.name] = proc
        started = now_rfc3339()
        self.statuses[plan.name] = {
            "name": plan.name,
            "image": plan.image,
            "imageID": f"podrunner://{image_name(plan.image)}",
            "containerID": f"podrunner://{proc.pid}",
            "ready": True,
            "started": True,
            "restartCount": restart_count,
            "state": {"running": {"startedAt": started}},
            **(
                {"lastState": self.statuses[plan.name]["lastState"]}
                if "lastState" in self.statuses.get(plan.name, {})
                else {}
            ),
        }

    def _wait_or_interrupt(self, deadline: float, seconds: float) -> bool:
        """Sleep up to `seconds`; True if the pod must stop (deadline, deletion, abort)."""
        self._wake.wait(timeout=max(0.0, min(seconds, deadline - time.monotonic())))
        self._wake.clear()
        return (
            self._abort_reason is not None or self._delete.is_set() or time.monotonic() >= deadline
        )

    def _wait_any(self, deadline: float) -> str | None:
        """Name of the next container that exits, or None when the pod must stop."""
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    return name
            if self._wait_or_interrupt(deadline, 0.05):
                return None

    def _collect(self, plan: _Plan, restart_count: int) -> ContainerResult:
        proc = self._procs.pop(plan.name)
        code = proc.returncode
        exit_code = 128 - code if code < 0 else code  # killed by a signal: 128+n, as runc
        message = read_termination_message(plan.termination_file)
        if not message and plan.fallback_to_logs and exit_code != 0:
            message = log_tail(plan.log_path)
        result = ContainerResult(
            name=plan.name,
            argv=plan.argv,
            exit_code=exit_code,
            reason="Completed" if exit_code == 0 else "Error",
            message=message,
            log_path=plan.log_path,
            started_at=self.statuses[plan.name]["state"]["running"]["startedAt"],
            finished_at=now_rfc3339(),
            restart_count=restart_count,
        )
        self.statuses[plan.name]["state"] = {"terminated": self._terminated(result)}
        self.statuses[plan.name]["ready"] = False
        self.statuses[plan.name]["started"] = False
        return result

    @staticmethod
    def _terminated(result: ContainerResult) -> dict[str, Any]:
        terminated: dict[str, Any] = {
            "exitCode": result.exit_code,
            "reason": result.reason,
            "startedAt": result.started_at,
            "finishedAt": result.finished_at,
        }
        if result.message:
            terminated["message"] = result.message
        return terminated

    def _kill_all(self, grace: float) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, end - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def _grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        grace = meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"))
        return min(float(30 if grace is None else grace), MAX_KILL_GRACE_SECONDS)

    # reporting -----------------------------------------------------------------------------
    def _patch_status(self, status: dict[str, Any]) -> bool:
        """Merge-patch the status (no resourceVersion: never conflicts); bounded retries."""
        assert self.api is not None
        for attempt in range(5):
            try:
                self.api.merge_patch(f"{self.pod_path}/status", {"status": status})
                return True
            except KubeError as exc:
                if exc.status == 404:
                    return False
                if exc.status < 500 and exc.status != 429:
                    self.runner._note_error(f"status {self.ns}/{self.name}: {exc}")
                    return False
            except OSError as exc:
                self.runner._note_error(f"status {self.ns}/{self.name}: {exc!r}")
            time.sleep(0.2 * 2**attempt)
        return False

    def _conditions(self, ready: bool, terminal: bool) -> list[dict[str, Any]]:
        now = now_rfc3339()
        reason = {"reason": "PodCompleted"} if terminal else {}
        return [
            {"type": "PodReadyToStartContainers", "status": str(not terminal),
             "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now, **reason},
            {"type": "Ready", "status": str(ready), "lastTransitionTime": now, **reason},
            {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": now,
             **reason},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.start_time},
        ]  # fmt: skip

    def _running_status(self, plans: Sequence[_Plan], pod_ips: Sequence[str]) -> dict[str, Any]:
        status: dict[str, Any] = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": self._conditions(
                ready=all(self.statuses.get(p.name, {}).get("ready") for p in plans),
                terminal=False,
            ),
            "containerStatuses": [self.statuses[p.name] for p in plans if p.name in self.statuses],
        }
        if pod_ips:
            status["podIP"] = pod_ips[0]
            status["podIPs"] = [{"ip": ip} for ip in pod_ips]
        self.run.phase = "Running"
        return status

    def _report_waiting(self, reason: str, message: str) -> None:
        spec = self.pod["spec"]
        self._patch_status(
            {
                "phase": "Pending",
                "startTime": self.start_time,
                "conditions": self._conditions(ready=False, terminal=False),
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": reason, "message": message}},
                    }
                    for c in spec["containers"]
                ],
            }
        )

    def _finish(self, results: Mapping[str, ContainerResult], plans: Sequence[_Plan]) -> None:
        succeeded = all(r.exit_code == 0 for r in results.values())
        phase = "Succeeded" if succeeded else "Failed"
        if self.run.reason == "CrashLoopBackOff":
            phase = "Failed"
        self.run.containers = [results[p.name] for p in plans if p.name in results]
        self.run.phase = phase
        self._patch_status(
            {
                "phase": phase,
                "startTime": self.start_time,
                "conditions": self._conditions(ready=False, terminal=True),
                "containerStatuses": [self.statuses[p.name] for p in plans],
            }
        )
        if self._delete.is_set():
            self.runner._confirm_delete(self.pod)

    def _finish_interrupted(
        self,
        deadline: float,
        results: Mapping[str, ContainerResult] | None = None,
        plans: Sequence[_Plan] = (),
    ) -> None:
        """Deadline, deletion or runner stop: kill, then report like the kubelet."""
        if self._abort_reason == "pod deleted":
            self._kill_all(grace=0)
            self.run.phase, self.run.reason = "Failed", "Deleted"
            return
        grace = 0.0 if self._abort_reason else self._grace()
        self._kill_all(grace=grace)
        collected = dict(results or {})
        for plan in plans:
            if plan.name in self._procs:
                collected[plan.name] = self._collect(plan, self.statuses[plan.name]["restartCount"])
        self.run.containers = [collected[p.name] for p in plans if p.name in collected]
        self.run.phase = "Failed"
        status: dict[str, Any] = {
            "phase": "Failed",
            "startTime": self.start_time,
            "conditions": self._conditions(ready=False, terminal=True),
        }
        if plans:
            status["containerStatuses"] = [self.statuses[p.name] for p in plans]
        if self._delete.is_set():
            self._patch_status(status)
            self.runner._confirm_delete(self.pod)
            return
        if self._abort_reason:
            self.run.reason = "PodRunnerStopped"
            status["reason"], status["message"] = self.run.reason, self._abort_reason
        elif time.monotonic() >= deadline:
            self.run.reason = "DeadlineExceeded"
            status["reason"] = "DeadlineExceeded"
            status["message"] = "Pod was active on the node longer than the specified deadline"
        self._patch_status(status)

    def _finish_unsupported(self, message: str) -> None:
        self.run.phase, self.run.reason = "Failed", "UnsupportedByPodRunner"
        self._patch_status(
            {"phase": "Failed", "reason": self.run.reason, "message": message,
             "startTime": self.start_time}
        )  # fmt: skip


def _netns_addresses(netns: str | None) -> list[str]:
    """Global addresses (IPv4 first) of a named network namespace, for status.podIPs."""
    if not netns or netns == HOST_NETNS:
        return []
    try:
        out = subprocess.run(
            ["ip", "-n", netns, "-j", "addr", "show"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        links = json.loads(out or "[]")
    except (subprocess.SubprocessError, ValueError, OSError):
        return []
    v4: list[str] = []
    v6: list[str] = []
    for link in links:
        for addr in link.get("addr_info", []):
            if addr.get("scope") != "global":
                continue
            (v4 if addr.get("family") == "inet" else v6).append(addr["local"])
    # the API allows one pod IP per family
    return v4[:1] + v6[:1]
