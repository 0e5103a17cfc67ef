"""The probe's side of the probe-operator contract (docs/contracts.md)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from traceroute_probe import cli, contract
from traceroute_probe.contract import (
    RESULT_FORMAT_VERSION,
    TERMINATION_MESSAGE_LIMIT,
    ExitCode,
    Flag,
    MessageKey,
    TargetKey,
)
from traceroute_probe.metrics import RESERVED_LABELS, validate_label_name
from traceroute_probe.result import RunResult, TargetError, TargetResult, termination_message


def _keys(namespace: type) -> set[str]:
    return {v for k, v in vars(namespace).items() if k.isupper() and isinstance(v, str)}


def test_the_contract_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(contract.__file__).read_text(encoding="utf-8"))
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert all(not node.level for node in ast.walk(tree) if isinstance(node, ast.ImportFrom))
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}


def test_exit_codes_and_limits_are_the_documented_ones() -> None:
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0),
        ("USAGE", 2),
        ("RESOLVE", 3),
        ("PERMISSION", 4),
        ("PUSH", 5),
    ]
    # 1 (a target not reached, before issue 11) is retired but still read as measured.
    assert contract.LEGACY_UNREACHABLE == 1
    assert sorted(contract.MEASURED_EXIT_CODES) == [0, 1]
    assert sorted(contract.OUTCOME_ERROR_KINDS) == ["resolve", "send"]
    assert TERMINATION_MESSAGE_LIMIT == 4096
    assert RESULT_FORMAT_VERSION == 1


def test_the_cli_accepts_every_flag_the_operator_sets() -> None:
    options = {o for action in cli.build_parser()._actions for o in action.option_strings}
    assert _keys(Flag) - {Flag.END_OF_OPTIONS} <= options


def test_the_termination_message_uses_the_contract_keys() -> None:
    run = RunResult(
        started=1_700_000_000.0,
        duration_seconds=1.5,
        targets=[
            TargetResult("a", "10.0.0.1", 4, "icmp", reached=True, hop_count=6, hops_min=4),
            TargetResult(
                "b",
                None,
                None,
                "icmp",
                error=TargetError("resolve", "no address"),
                rejected_replies={"checksum": 2, "destination": 1},
            ),
        ],
        errors=["b: resolve: no address"],
        exit_code=int(ExitCode.RESOLVE),
    )
    doc = json.loads(termination_message(run))
    assert set(doc) == _keys(MessageKey)
    assert doc[MessageKey.VERSION] == RESULT_FORMAT_VERSION
    assert doc[MessageKey.EXIT_CODE] == ExitCode.RESOLVE
    first, second = doc[MessageKey.TARGETS]
    assert set(first) == _keys(TargetKey) - {TargetKey.ERROR, TargetKey.REJECTED}
    # hmin only when the flows' hop counts differ (unequal ECMP branches)
    assert set(second) == _keys(TargetKey) - {TargetKey.HOPS_MIN}
    assert second[TargetKey.REJECTED] == 3


def test_reserved_labels_are_refused_as_extra_labels() -> None:
    assert RESERVED_LABELS is contract.RESERVED_LABELS
    assert set(contract.GROUPING_LABELS) <= RESERVED_LABELS
    for name in RESERVED_LABELS:
        assert validate_label_name(name) == f"label name {name!r} is reserved"
