"""Parsing the probe's termination message (contracts.md section 3) defensively."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from traceroute_operator.results import (
    ResultError,
    log_lines,
    parse_termination_message,
)
from traceroute_probe import cli as probe_cli
from traceroute_probe.contract import LOG_PREFIX

CONTRACT_EXAMPLE = {
    "v": 1,
    "ts": 1764000000.1,
    "dur": 1.23,
    "code": 0,
    "err": ["push: connection refused"],
    "t": [
        {
            "n": "example.org",
            "a": "10.0.5.2",
            "r": True,
            "h": 5,
            "p": [["10.0.1.1"], ["10.0.2.1", "10.0.3.1"], [], ["10.0.4.1"], ["10.0.5.2"]],
            "l": 0.0,
            "rtt": 12.3,
        }
    ],
    "trunc": False,
}


def message(**changes: Any) -> str:
    doc = json.loads(json.dumps(CONTRACT_EXAMPLE))
    doc.update(changes)
    return json.dumps(doc, separators=(",", ":"))


def test_contract_example() -> None:
    run = parse_termination_message(message())
    assert run.timestamp == 1764000000.1
    assert run.duration == 1.23
    assert run.exit_code == 0
    assert run.errors == ("push: connection refused",)
    assert not run.truncated
    (target,) = run.targets
    assert target.name == "example.org"
    assert target.address == "10.0.5.2"
    assert target.reached and target.hops == 5
    assert target.path is not None
    assert target.path[1] == frozenset({"10.0.2.1", "10.0.3.1"})
    assert target.path[2] == frozenset()
    assert target.loss_ratio == 0.0 and target.rtt_ms == 12.3
    assert run.target("example.org") is target and run.target("other") is None


def test_degraded_message_null_path_and_no_rtt() -> None:
    target = {
        "n": "b.example",
        "a": None,
        "r": False,
        "h": 0,
        "p": None,
        "l": 1.0,
        "e": "resolve: NXDOMAIN",
    }
    run = parse_termination_message(message(t=[target], trunc=True, code=3))
    (parsed,) = run.targets
    assert parsed.path is None and parsed.address is None and parsed.rtt_ms is None
    assert parsed.error == "resolve: NXDOMAIN"
    assert run.truncated and run.exit_code == 3


def test_ipv6_addresses_are_normalised() -> None:
    target = {"n": "v6", "a": "2001:DB8::1", "r": True, "h": 1, "p": [["2001:db8:0::1"]], "l": 0}
    (parsed,) = parse_termination_message(message(t=[target])).targets
    assert parsed.address == "2001:db8::1"
    assert parsed.path == (frozenset({"2001:db8::1"}),)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "no termination message"),
        ("", "empty"),
        ("   \n", "empty"),
        ("Traceback (most recent call last):", "not JSON"),
        ('{"v":1,"ts":1', "not JSON"),
        ("[1,2]", "not a JSON object"),
        (message(v=2), "unsupported result version"),
        (message(ts=None), "ts"),
        (message(code="0"), "code"),
        (message(t=None), "t:"),
        (message(t=[{"n": "x", "r": "yes", "h": 1}]), "t[0].r"),
        (message(t=[{"n": "x", "r": True, "h": -1}]), "t[0].h"),
        (message(t=[{"r": True, "h": 1}]), "t[0].n"),
        ("x" * 70_000, "too large"),
    ],
)
def test_unusable_messages_say_why(text: str | None, reason: str) -> None:
    with pytest.raises(ResultError, match=None) as info:
        parse_termination_message(text)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "path",
    [
        [["10.0.1.1"], ["not-an-ip"]],  # garbage address
        [["10.0.1.1"]],  # shorter than h
        "10.0.1.1",  # not a list
        [[1]],
    ],
)
def test_malformed_path_means_unknown_path_not_a_lost_run(path: Any) -> None:
    target = {"n": "x", "a": "10.0.0.9", "r": True, "h": 2, "p": path, "l": 0.5}
    (parsed,) = parse_termination_message(message(t=[target])).targets
    assert parsed.path is None
    assert parsed.reached and parsed.hops == 2 and parsed.loss_ratio == 0.5


def test_bytes_input_and_out_of_range_numbers() -> None:
    target = {"n": "x", "a": "10.0.0.9", "r": True, "h": 0, "p": [], "l": 7, "rtt": -1}
    (parsed,) = parse_termination_message(message(t=[target]).encode()).targets
    assert parsed.loss_ratio is None and parsed.rtt_ms is None


@given(st.text(max_size=300) | st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_arbitrary_input_never_crashes(text: str | bytes) -> None:
    with contextlib.suppress(ResultError):
        parse_termination_message(text)


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 300)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from([*list("vtsnarhple"), "ts", "rtt", "code", "err"]), inner, max_size=6
        )
    ),
    max_leaves=25,
)


@given(JSONISH)
@settings(max_examples=300, deadline=None)
def test_arbitrary_json_never_crashes(doc: Any) -> None:
    try:
        text = json.dumps(doc)
    except ValueError:
        return
    with contextlib.suppress(ResultError):
        parse_termination_message(text)


def test_a_log_tail_yields_the_probes_own_lines(capsys: pytest.CaptureFixture[str]) -> None:
    # what the kubelet gives for FallbackToLogsOnError when the probe exits 2 (bad arguments)
    code = probe_cli.main(["--protocol", "icmp", "--port", "80", "--", "192.0.2.1"])
    assert code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(LOG_PREFIX)
    with pytest.raises(ResultError):
        parse_termination_message(stderr)
    assert log_lines(stderr) == (stderr.strip(),)
    assert "--port applies to udp and tcp only" in stderr


def test_log_lines_prefer_the_probe_and_ignore_results() -> None:
    tail = "hop table line\ntraceroute-probe: push: HTTP 503\n\ntraceroute-probe: cannot write\n"
    assert log_lines(tail) == ("traceroute-probe: push: HTTP 503", "traceroute-probe: cannot write")
    crash = "Traceback (most recent call last):\n  File x\nImportError: no module y\n"
    assert log_lines(crash) == ("ImportError: no module y",)
    assert log_lines('{"v":1,"ts":') == ()  # a cut-off result is not a log tail
    assert log_lines(None) == () and log_lines("  \n") == ()
    assert log_lines(b"traceroute-probe: error: x") == ("traceroute-probe: error: x",)
