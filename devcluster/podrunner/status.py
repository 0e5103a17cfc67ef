"""The pod status a kubelet writes: pure builders of the documents, and the patch call.

Builders take the time (`now`) as an argument, so a status is a function of what happened.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.kubetools import KubeError, KubeRest

TERMINATION_MESSAGE_MAX_BYTES = 4096  # kubelet: MaxContainerTerminationMessageLength
FALLBACK_LOG_LINES = 80  # kubelet: MaxContainerTerminationMessageLogLines
FALLBACK_LOG_BYTES = 2048  # kubelet: MaxContainerTerminationMessageLogLength
HOST_IP = "127.0.0.1"

Status = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what a container left behind -------------------------------------------------------------


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


def termination_message(
    termination_file: Path, log_path: Path, fallback_to_logs: bool, exit_code: int
) -> str:
    """The message file; for `FallbackToLogsOnError`, the log tail when a failed container
    wrote no message."""
    message = read_termination_message(termination_file)
    if not message and fallback_to_logs and exit_code != 0:
        message = log_tail(log_path)
    return message


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


def exit_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


# --- container statuses -----------------------------------------------------------------------


def terminated_state(result: ContainerResult) -> dict[str, Any]:
    terminated: dict[str, Any] = {
        "exitCode": result.exit_code,
        "reason": result.reason,
        "startedAt": result.started_at,
        "finishedAt": result.finished_at,
    }
    if result.message:
        terminated["message"] = result.message
    return terminated


def running_container_status(
    *,
    name: str,
    image: str,
    image_id: str,
    pid: int,
    restart_count: int,
    started_at: str,
    last_state: Mapping[str, Any] | None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": name,
        "image": image,
        "imageID": image_id,
        "containerID": f"podrunner://{pid}",
        "ready": True,
        "started": True,
        "restartCount": restart_count,
        "state": {"running": {"startedAt": started_at}},
    }
    if last_state is not None:
        status["lastState"] = last_state
    return status


def crash_loop_state(name: str) -> dict[str, Any]:
    return {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": f"back-off restarting failed container {name}",
        }
    }


def waiting_container_status(
    container: Mapping[str, Any], reason: str, message: str
) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}},
    }


class ContainerStatuses:
    """The `containerStatuses` of one pod as its containers start, exit and restart, in
    the order of the pod's containers."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._by_name: dict[str, dict[str, Any]] = {}

    def started(
        self, *, name: str, image: str, image_id: str, pid: int, restart_count: int, now: str
    ) -> None:
        """Running; a restarted container keeps its `lastState`."""
        last_state = self._by_name.get(name, {}).get("lastState")
        self._by_name[name] = running_container_status(
            name=name,
            image=image,
            image_id=image_id,
            pid=pid,
            restart_count=restart_count,
            started_at=now,
            last_state=last_state,
        )

    def started_at(self, name: str) -> str:
        return str(self._by_name[name]["state"]["running"]["startedAt"])

    def restart_count(self, name: str) -> int:
        return int(self._by_name[name]["restartCount"])

    def terminated(self, result: ContainerResult) -> None:
        status = self._by_name[result.name]
        status["state"] = {"terminated": terminated_state(result)}
        status["ready"] = False
        status["started"] = False

    def will_restart(self, result: ContainerResult) -> None:
        self._by_name[result.name]["lastState"] = {"terminated": terminated_state(result)}

    def crash_looping(self, name: str) -> None:
        self._by_name[name]["state"] = crash_loop_state(name)

    def all_ready(self) -> bool:
        return all(self._by_name.get(n, {}).get("ready") for n in self.names)

    def reported(self) -> list[dict[str, Any]]:
        """The containers started so far."""
        return [self._by_name[n] for n in self.names if n in self._by_name]

    def every(self) -> list[dict[str, Any]]:
        """All containers (once every one has started)."""
        return [self._by_name[n] for n in self.names]


# --- pod statuses -----------------------------------------------------------------------------


def conditions(ready: bool, terminal: bool, now: str, scheduled_at: str) -> list[dict[str, Any]]:
    reason = {"reason": "PodCompleted"} if terminal else {}
    return [
        {"type": "PodReadyToStartContainers", "status": str(not terminal),
         "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now, **reason},
        {"type": "Ready", "status": str(ready), "lastTransitionTime": now, **reason},
        {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": now,
         **reason},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled_at},
    ]  # fmt: skip


def running_status(
    start_time: str,
    now: str,
    container_statuses: Sequence[Mapping[str, Any]],
    all_ready: bool,
    pod_ips: Sequence[str],
) -> Status:
    status: Status = {
        "phase": "Running",
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "startTime": start_time,
        "conditions": conditions(ready=all_ready, terminal=False, now=now, scheduled_at=start_time),
        "containerStatuses": list(container_statuses),
    }
    if pod_ips:
        status["podIP"] = pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in pod_ips]
    return status


def waiting_status(
    containers: Sequence[Mapping[str, Any]], reason: str, message: str, start_time: str, now: str
) -> Status:
    """Pending with every container waiting (a config error the kubelet retries)."""
    return {
        "phase": "Pending",
        "startTime": start_time,
        "conditions": conditions(ready=False, terminal=False, now=now, scheduled_at=start_time),
        "containerStatuses": [waiting_container_status(c, reason, message) for c in containers],
    }


def terminal_status(
    phase: str,
    start_time: str,
    now: str,
    container_statuses: Sequence[Mapping[str, Any]] | None,
) -> Status:
    """Succeeded/Failed; `container_statuses` None: none are reported."""
    status: Status = {
        "phase": phase,
        "startTime": start_time,
        "conditions": conditions(ready=False, terminal=True, now=now, scheduled_at=start_time),
    }
    if container_statuses is not None:
        status["containerStatuses"] = list(container_statuses)
    return status


def pod_phase(exit_codes: Sequence[int], crash_looping: bool) -> str:
    if crash_looping:
        return "Failed"
    return "Succeeded" if all(code == 0 for code in exit_codes) else "Failed"


DEADLINE_EXCEEDED_MESSAGE = "Pod was active on the node longer than the specified deadline"


def interruption(abort_reason: str | None, deadline_passed: bool) -> tuple[str, str] | None:
    """(reason, message) of a pod the runner stopped early; None: no reason is given."""
    if abort_reason:
        return "PodRunnerStopped", abort_reason
    if deadline_passed:
        return "DeadlineExceeded", DEADLINE_EXCEEDED_MESSAGE
    return None


def unsupported_status(message: str, start_time: str) -> Status:
    return {
        "phase": "Failed",
        "reason": "UnsupportedByPodRunner",
        "message": message,
        "startTime": start_time,
    }


def runner_error_status(exc: BaseException) -> Status:
    return {"phase": "Failed", "reason": "PodRunnerError", "message": repr(exc)[:1000]}


# --- writing ----------------------------------------------------------------------------------


class StatusWriter:
    """Merge-patches one pod's status (no resourceVersion: never conflicts), with bounded
    retries on server errors; refusals go to `note_error` (tests fail on them)."""

    ATTEMPTS = 5

    def __init__(
        self, api: KubeRest, namespace: str, name: str, note_error: Callable[[str], None]
    ) -> None:
        self.api = api
        self.what = f"{namespace}/{name}"
        self.path = f"/api/v1/namespaces/{namespace}/pods/{name}/status"
        self.note_error = note_error

    def patch(self, status: Status) -> bool:
        what = self.what
        for attempt in range(self.ATTEMPTS):
            try:
                self.api.merge_patch(self.path, {"status": status})
                return True
            except KubeError as exc:
                if exc.status == 404:
                    return False
                if exc.status < 500 and exc.status != 429:
                    self.note_error(f"status {what}: {exc}")
                    return False
            except OSError as exc:
                self.note_error(f"status {what}: {exc!r}")
            time.sleep(0.2 * 2**attempt)
        return False
