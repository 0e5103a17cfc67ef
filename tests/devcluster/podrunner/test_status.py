"""The status documents the runner writes, built from what happened: no root, no cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest

from devcluster.kubetools import KubeError, KubeRest
from devcluster.podrunner.status import (
    FALLBACK_LOG_BYTES,
    TERMINATION_MESSAGE_MAX_BYTES,
    ContainerResult,
    ContainerStatuses,
    StatusWriter,
    conditions,
    exit_reason,
    interruption,
    log_tail,
    pod_phase,
    read_termination_message,
    runner_error_status,
    running_status,
    terminal_status,
    terminated_state,
    termination_message,
    unsupported_status,
    waiting_status,
)


def test_termination_message_is_the_files_last_4096_bytes(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    message.write_bytes(b"A" * 100 + b"B" * TERMINATION_MESSAGE_MAX_BYTES)
    assert read_termination_message(message) == "B" * TERMINATION_MESSAGE_MAX_BYTES
    assert read_termination_message(tmp_path / "missing") == ""
    logs = tmp_path / "log"
    logs.write_text("".join(f"line {i}\n" for i in range(200)))
    tail = log_tail(logs)
    assert tail.endswith("line 199\n") and "line 119\n" not in tail  # last 80 lines


def test_log_tail_keeps_at_most_2048_bytes(tmp_path: Path) -> None:
    logs = tmp_path / "log"
    logs.write_bytes(b"x" * 5000 + b"\nlast\n")
    tail = log_tail(logs)
    assert len(tail.encode()) == FALLBACK_LOG_BYTES and tail.endswith("last\n")
    assert log_tail(tmp_path / "missing") == ""


def test_fallback_to_logs_only_for_a_failed_container_without_a_message(tmp_path: Path) -> None:
    message, logs = tmp_path / "termination-log", tmp_path / "output.log"
    message.write_bytes(b"")
    logs.write_text("boom\n")
    assert termination_message(message, logs, fallback_to_logs=True, exit_code=3) == "boom\n"
    assert termination_message(message, logs, fallback_to_logs=True, exit_code=0) == ""
    assert termination_message(message, logs, fallback_to_logs=False, exit_code=3) == ""
    message.write_text('{"result": 1}')
    assert termination_message(message, logs, fallback_to_logs=True, exit_code=3) == '{"result": 1}'


def _result(name: str = "c", exit_code: int = 0, message: str = "") -> ContainerResult:
    return ContainerResult(
        name=name,
        argv=["/bin/true"],
        exit_code=exit_code,
        reason=exit_reason(exit_code),
        message=message,
        log_path=Path("/dev/null"),
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:00:05Z",
    )


def test_terminated_state_carries_exit_code_reason_times_and_message() -> None:
    assert terminated_state(_result(exit_code=0)) == {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:05Z",
    }  # no empty message
    failed = terminated_state(_result(exit_code=137, message="killed"))
    assert (failed["reason"], failed["message"]) == ("Error", "killed")


def test_container_statuses_through_start_exit_restart_and_crash_loop() -> None:
    statuses = ContainerStatuses(["main", "side"])
    assert statuses.reported() == [] and not statuses.all_ready()
    start = {"image": "python", "image_id": "podrunner://python", "now": "T0"}
    statuses.started(name="side", pid=11, restart_count=0, **start)
    statuses.started(name="main", pid=10, restart_count=0, **start)
    assert [s["name"] for s in statuses.reported()] == ["main", "side"]  # the pod's order
    assert statuses.all_ready()
    main = statuses.reported()[0]
    assert main["state"] == {"running": {"startedAt": "T0"}}
    assert main["containerID"] == "podrunner://10" and "lastState" not in main
    assert statuses.started_at("main") == "T0"

    first = _result("main", exit_code=1)
    statuses.terminated(first)
    statuses.will_restart(first)
    main = statuses.reported()[0]
    assert main["state"] == {"terminated": terminated_state(first)}
    assert (main["ready"], main["started"]) == (False, False)
    assert not statuses.all_ready()

    statuses.started(name="main", pid=12, restart_count=1, **{**start, "now": "T1"})
    main = statuses.reported()[0]
    assert main["lastState"] == {"terminated": terminated_state(first)}  # kept across restart
    assert main["restartCount"] == statuses.restart_count("main") == 1
    assert main["state"] == {"running": {"startedAt": "T1"}}

    statuses.crash_looping("main")
    assert statuses.every()[0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"


def test_running_status_reports_pod_ips_and_readiness() -> None:
    status = running_status(
        "T0", "T1", [{"name": "c"}], all_ready=True, pod_ips=["10.0.0.2", "fd00::2"]
    )
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.0.0.2"
    assert status["podIPs"] == [{"ip": "10.0.0.2"}, {"ip": "fd00::2"}]
    assert status["hostIP"] == "127.0.0.1" and status["startTime"] == "T0"
    ready = {c["type"]: c for c in status["conditions"]}
    assert ready["Ready"]["status"] == ready["ContainersReady"]["status"] == "True"
    assert ready["PodScheduled"]["lastTransitionTime"] == "T0"
    assert ready["Ready"]["lastTransitionTime"] == "T1"
    assert "podIP" not in running_status("T0", "T1", [], all_ready=False, pod_ips=[])


def test_terminal_conditions_say_pod_completed() -> None:
    status = terminal_status("Succeeded", "T0", "T1", [{"name": "c"}])
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Ready"] == {
        "type": "Ready",
        "status": "False",
        "lastTransitionTime": "T1",
        "reason": "PodCompleted",
    }
    assert by_type["PodReadyToStartContainers"]["status"] == "False"
    assert status["containerStatuses"] == [{"name": "c"}]
    assert "containerStatuses" not in terminal_status("Failed", "T0", "T1", None)
    assert (
        conditions(ready=False, terminal=False, now="T1", scheduled_at="T0")[0]["status"] == "True"
    )


def test_config_errors_leave_every_container_waiting() -> None:
    containers = [{"name": "a", "image": "python"}, {"name": "b"}]
    status = waiting_status(
        containers, "CreateContainerConfigError", 'secret "x" not found', "T0", "T1"
    )
    assert status["phase"] == "Pending"
    assert [s["state"] for s in status["containerStatuses"]] == [
        {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "x" not found'}}
    ] * 2
    assert status["containerStatuses"][1]["image"] == ""


def test_pod_phase_and_interruption_reasons() -> None:
    assert pod_phase([0, 0], crash_looping=False) == "Succeeded"
    assert pod_phase([0, 1], crash_looping=False) == "Failed"
    assert pod_phase([0], crash_looping=True) == "Failed"
    assert interruption("pod runner stopped", deadline_passed=True) == (
        "PodRunnerStopped",
        "pod runner stopped",
    )
    assert interruption(None, deadline_passed=True) == (
        "DeadlineExceeded",
        "Pod was active on the node longer than the specified deadline",
    )
    assert interruption(None, deadline_passed=False) is None
    assert unsupported_status("no init containers", "T0")["reason"] == "UnsupportedByPodRunner"
    assert (
        runner_error_status(ValueError("x" * 2000))["message"]
        == repr(ValueError("x" * 2000))[:1000]
    )


class FakeApi:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((path, body))
        if self.failures:
            raise self.failures.pop(0)
        return {}


def _writer(api: FakeApi, errors: list[str]) -> StatusWriter:
    return StatusWriter(cast(KubeRest, api), "team", "web-1", errors.append)


def test_status_writer_retries_server_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    errors: list[str] = []
    api = FakeApi(
        [
            KubeError(503, "busy", "PATCH pod status"),
            KubeError(429, "slow down", "PATCH pod status"),
        ]
    )
    assert _writer(api, errors).patch({"phase": "Running"}) is True
    assert [p for p, _ in api.patches] == ["/api/v1/namespaces/team/pods/web-1/status"] * 3
    assert api.patches[-1][1] == {"status": {"phase": "Running"}}
    assert errors == []
    api = FakeApi([KubeError(500, "down", "PATCH pod status")] * StatusWriter.ATTEMPTS)
    assert _writer(api, errors).patch({}) is False
    assert len(api.patches) == StatusWriter.ATTEMPTS


def test_status_writer_gives_up_on_refusals_and_notes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    errors: list[str] = []
    gone = FakeApi([KubeError(404, "not found", "PATCH pod status")])
    assert _writer(gone, errors).patch({}) is False and errors == []  # pod deleted meanwhile
    refused = FakeApi([KubeError(422, "podIPs: too many", "PATCH pod status")])
    assert _writer(refused, errors).patch({}) is False
    assert len(refused.patches) == 1
    assert errors and errors[0].startswith("status team/web-1: ")
