"""pytest fixtures for the network-namespace lab (see lab.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.realenv.lab import Lab, Topology

LabFactory = Callable[[Topology], Lab]


def require_root() -> None:
    """Skip (not fail) for a non-root user: the lab and the pod runner need root."""
    if os.geteuid() != 0:
        pytest.skip(
            "the real test environment needs root (pod runner: setpriv/mount namespaces; "
            "lab: network namespaces); run the tests as root"
        )


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Callable(Topology) -> started Lab; every lab is torn down after the test."""
    require_root()
    labs: list[Lab] = []

    def start(topology: Topology) -> Lab:
        lab = Lab(topology)
        labs.append(lab)
        return lab.start()

    try:
        yield start
    finally:
        for lab in reversed(labs):
            lab.stop()
