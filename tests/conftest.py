"""Shared fixtures: one real two-node Ray cluster per test session.

The cluster mirrors Titan + Panda (a head labelled titan and a worker labelled
panda, one logical GPU each) and serves the production ``serve_config.yaml``
with the CPU embedded default. It uses free ports and its own RAY_TMPDIR, so it
never touches Redis on 6379 nor a cluster started by ``make run``.

Markers come from the folder: tests/unit -> unit, tests/integration -> integration.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_TOKEN = "test-token-6f1c"

# This checkout's code, for the test process and the Ray workers it starts
# (ahead of an editable install that may point at another checkout).
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cluster import sandbox  # noqa: E402  (after sys.path points at this checkout)
from cluster.sandbox import Sandbox  # noqa: E402


def pytest_collection_modifyitems(items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if len(parts) > 1:
            item.add_marker(parts[0])


# The shared cluster is a cluster.sandbox.Sandbox (ServeCluster kept as the fixture's type name).
ServeCluster = Sandbox


@pytest.fixture(scope="session")
def serve_cluster() -> ServeCluster:
    """Start titan + panda nodes, deploy serve_config.yaml, wait until /health answers."""
    box = sandbox.start(TEST_TOKEN)
    yield box
    box.stop()


@pytest.fixture(scope="session")
def api(serve_cluster: ServeCluster) -> httpx.Client:
    """An authenticated HTTP client against the shared test cluster."""
    with serve_cluster.client() as client:
        yield client
