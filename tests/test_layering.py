"""The layers import downward only: the product (probe, operator) never imports the local
cluster or the tests, and the local cluster (devcluster, hack) never imports the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package tree -> top-level modules it must not import
FORBIDDEN = {
    "probe/traceroute_probe": {"tests", "devcluster", "traceroute_operator"},
    "operator/traceroute_operator": {"tests", "devcluster"},
    "devcluster": {"tests"},
    "hack": {"tests"},
}


def _imported_tops(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tops = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    return tops | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and not node.level
    }


@pytest.mark.parametrize("tree", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(tree: str) -> None:
    files = sorted((ROOT / tree).rglob("*.py"))
    assert files, f"{tree} has no Python files"
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_tops(path) & FORBIDDEN[tree])
        for path in files
        if _imported_tops(path) & FORBIDDEN[tree]
    }
    assert offenders == {}


def test_the_import_scan_sees_an_import_from_tests(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom tests.fixtures.lab import x\nfrom . import y\n")
    assert _imported_tops(module) == {"os", "tests"}
