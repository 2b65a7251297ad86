"""200 callers against /v1/tts for 60 s: every call is answered in bounded time, overload is
shed with 503 + Retry-After, and the Serve processes' memory stays flat (issue 12, overload)."""

from __future__ import annotations

import pytest

from bench.overload import run_overload
from cluster import sandbox
from deployments.settings import HttpSettings
from tests.conftest import TEST_TOKEN


@pytest.fixture(scope="module")
def overload_box():
    """Unpinned, as bench.overload runs: this is about admission, not a node's death, and
    with titan's proxy, gateway and Kokoro on one core the 200 callers' requests alone
    would take the CPU the served ones need."""
    box = sandbox.start(TEST_TOKEN)
    yield box
    box.stop()


def test_two_hundred_callers_get_bounded_answers_and_memory_stays_flat(overload_box):
    s = run_overload(overload_box, clients=200, duration_s=60, unloaded_s=15)
    print(s.row(1))
    assert set(s.statuses) <= {"200", "503", "504"}, s.statuses  # no client-side timeout, no 500
    assert s.statuses.get("200", 0) > 0 and s.statuses.get("503", 0) > 0, s.statuses
    # The gateway's deadline starts when it gets the request; the proxy may hold it before.
    assert s.longest_wait_s <= 2 * HttpSettings().route_timeout_s
    # The latency target (served p99 <= 2x the unloaded p99 + 1 s, shed answers at once)
    # is a speed target: bench.overload reports it, met or missed, with its ratio.
    settled = [mb for t, mb in s.memory_mb if t >= s.duration_s / 3]
    assert s.memory_growth_mb < 0.1 * settled[0], s.memory_mb
