"""The CLI's edge: bad arguments are refused before any packet (one stderr line, exit 2),
no input gives a traceback, and the exit code says whether the probe failed, not what it
measured (contracts.md section 1)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from traceroute_probe import cli
from traceroute_probe.contract import ExitCode
from traceroute_probe.result import TargetError, TargetResult

BAD_URLS = [
    "not a url",
    "ftp://x",
    "http://[::1",
    "http://pgw:99999",
    "http:///nohost",
    "http://pgw:0",
    "http://pgw:port",
    "pgw:9091",
    "",
    "http://user:secret@pgw:9091",
    "http://pgw:9091/?q=1",
    "http://pg\u00fcw:9091",
    "http://pgw\n:9091",
]


class _SentError(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tracing, resolving and pushing fail the test: nothing may leave."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _SentError("the probe sent, resolved or pushed")

    monkeypatch.setattr(cli, "run_wave", refuse)
    monkeypatch.setattr(cli, "_resolve_all", refuse)
    monkeypatch.setattr(cli, "_push", refuse)
    yield


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_pushgateway_url_is_refused_before_any_packet(
    url: str, no_network: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    code = cli.main(
        ["--pushgateway", url, "--probe", "p", "--termination-log", str(log), "10.0.0.1"]
    )
    out, err = capsys.readouterr()
    assert code == ExitCode.USAGE
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "traceroute-probe: error: argument --pushgateway"
    )
    assert not log.exists()


@pytest.mark.parametrize("url", ["not a url", "http://pgw:99999", "http://[::1"])
def test_a_bad_url_in_a_real_process_exits_2_without_traceback(url: str) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "traceroute_probe.cli", "--pushgateway", url),
            *("--probe", "p", "--termination-log", "/dev/null", "127.0.0.1"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == ExitCode.USAGE and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("url", ["http://pgw:9091", "https://[fd00::1]:9091/prefix", "http://a.b."])
def test_good_urls_are_taken_as_given(url: str) -> None:
    args = cli.build_parser().parse_args(["--pushgateway", url, "10.0.0.1"])
    assert args.pushgateway == url


def _result(name: str, *, reached: bool = True, error: TargetError | None = None) -> TargetResult:
    address = None if error is not None and error.kind == "resolve" else "10.0.0.9"
    return TargetResult(name, address, 4, "icmp", reached=reached, error=error)


@pytest.mark.parametrize(
    ("results", "push_failed", "code"),
    [
        ([_result("a", reached=False)], False, ExitCode.OK),  # measured: not reached
        ([_result("a", reached=False, error=TargetError("send", "EPERM: x"))], False, 0),
        ([_result("a"), _result("b", error=TargetError("resolve", "no"))], False, 0),
        ([_result("b", error=TargetError("resolve", "no"))], False, ExitCode.RESOLVE),
        ([_result("a"), _result("b", error=TargetError("socket", "x"))], False, 4),
        ([_result("a", error=TargetError("permission", "x"))], False, 4),
        ([_result("a", error=TargetError("internal", "x"))], False, 4),
        ([_result("a", reached=False)], True, ExitCode.PUSH),
        ([_result("b", error=TargetError("resolve", "no"))], True, ExitCode.PUSH),
    ],
)
def test_the_exit_code_says_whether_the_probe_failed(
    results: list[TargetResult], push_failed: bool, code: int
) -> None:
    assert cli._exit_code(results, push_failed) == code


_FLAGS = [a for action in cli.build_parser()._actions for a in action.option_strings]
_WORDS = st.one_of(
    st.sampled_from([*_FLAGS, "--", "-", "10.0.0.1", "::1", "0", "-1", "99999", "x=1", "http://"]),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_WORDS, max_size=8))
def test_no_argument_vector_gives_a_traceback(argv: Sequence[str]) -> None:
    """Whatever the arguments: a documented exit code, never an exception (argparse's own
    --help/--version exit 0 through SystemExit). Nothing is traced, resolved or pushed."""

    def fake_trace(specs: Any, options: Any) -> list[TargetResult]:
        return [TargetResult(s.name, s.address, s.family, options.protocol) for s in specs]

    def fake_resolve(targets: Sequence[str], family: str) -> list[Any]:
        return [(None, None, TargetError("resolve", "fake"))] * len(targets)

    fakes = {
        "run_wave": fake_trace,
        "_resolve_all": fake_resolve,
        "_push": lambda *args: False,
        "_write_termination_log": lambda path, text: None,
    }
    saved = {name: getattr(cli, name) for name in fakes}
    for name, fake in fakes.items():
        setattr(cli, name, fake)
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0
    finally:
        for name, original in saved.items():
            setattr(cli, name, original)
    assert code in {0, 2, 3, 4, 5}
