"""The status documents the runner writes, built from what happened: no root, no cluster."""

from __future__ import annotations

from pathlib import Path

from devcluster.podrunner.status import (
    TERMINATION_MESSAGE_MAX_BYTES,
    log_tail,
    read_termination_message,
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
