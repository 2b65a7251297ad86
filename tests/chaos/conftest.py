"""Chaos tests kill nodes, so they get their own cluster and their own pytest run
(`make test` runs them after the rest; `make chaos` runs the long version)."""

from __future__ import annotations

import pytest

from cluster import sandbox
from tests.conftest import TEST_TOKEN


@pytest.fixture(scope="module")
def chaos_box():
    box = sandbox.start(TEST_TOKEN)
    yield box
    box.stop()
