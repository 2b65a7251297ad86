"""Chaos tests kill nodes, so they get their own cluster and their own pytest run
(`make test` runs them after the rest; `make chaos` runs the long version).

Each node is pinned to its own half of the cores, as on two machines: a node
starting up or dying does not take CPU from the other."""

from __future__ import annotations

import os

import pytest

from cluster import sandbox
from tests.conftest import TEST_TOKEN


ADMISSION_WAIT_S = "5"
"""The failover tests measure failover, not admission (test_overload does): at 70 % of a
slow machine's capacity, a hiccup can push the expected wait past the phone's 1 s and shed
a request before any node is killed."""


@pytest.fixture(scope="module")
def chaos_box():
    os.environ["SERVE_SPEECH__ADMISSION_WAIT_S"] = ADMISSION_WAIT_S
    try:
        box = sandbox.start(TEST_TOKEN, pin_cores=True)
    finally:
        del os.environ["SERVE_SPEECH__ADMISSION_WAIT_S"]
    yield box
    box.stop()


@pytest.fixture(scope="module")
def failover_rate(chaos_box) -> float:
    """Requests/s for the failover tests: 70 % of what titan alone serves (so the tests
    measure failover, not overload), at most the 10/s they were written for."""
    from bench.failover import measure_capacity

    return min(10.0, 0.7 * measure_capacity(chaos_box))
