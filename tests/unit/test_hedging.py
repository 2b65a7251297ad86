"""Hedged TTS streams: a late sentence is also asked of the other node, the first answer wins.

The deployment handle here is a stand-in for Serve's (routing follows the same
in-process tables PreferredHostRouter reads); synthesis is the real Piper
engine. A "dead" node is one whose call never answers, as a SIGKILLed machine
looks to its caller until Ray notices.
"""

from __future__ import annotations

import asyncio

import pytest
from ray.serve.exceptions import BackPressureError

from deployments import routing
from deployments.piper import PiperEngine
from graphs.failover import HedgePolicy, TTSStream
from graphs.http import APIError

ASYNC = pytest.mark.asyncio(loop_scope="module")

TEXT = "Good morning. It is seven o'clock. Time to get up."


@pytest.fixture(scope="module")
def piper():
    engine = PiperEngine("en_US-joe-medium")
    engine.load()
    return engine


class Call:
    """One streamed call to a replica on ``host``: a piece per sentence, or silence after
    ``dies_after`` pieces (the machine is gone)."""

    def __init__(self, engine, host: str, text: str, dies_after: int | None, full: bool = False):
        self.host, self.text, self.cancelled, self.full = host, text, False, full
        self.chunks = engine.stream(text)
        self.left = dies_after

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self.full:  # as Serve's router says when every replica's queue is full
            raise BackPressureError(num_queued_requests=8, max_queued_requests=8)
        if self.left == 0:
            await asyncio.Event().wait()  # never answers
        chunk = await asyncio.to_thread(next, self.chunks, None)
        if chunk is None:
            raise StopAsyncIteration
        if self.left is not None:
            self.left -= 1
        return chunk.tobytes()

    def cancel(self) -> None:
        self.cancelled = True


class TwoNodeHandle:
    """Replicas on panda (preferred) and titan, chosen like PreferredHostRouter does."""

    deployment_name = "PiperTTS"

    def __init__(self, engine, dies_after: dict[str, int], full_for: int = 0,
                 hosts: tuple[str, ...] = ("panda", "titan")):
        self.engine, self.dies_after, self.calls, self.full_for = engine, dies_after, [], full_for
        self.hosts = list(hosts)

    def options(self, stream: bool):
        return self

    @property
    def stream(self):
        return self

    def remote(self, text: str, fmt: str, **kwargs) -> Call:
        rid = routing.current_request_id()
        avoid = routing.suspected() | {routing._avoid.get(rid)} - {None}
        host = routing.rank_by_host(self.hosts, lambda h: h, ["panda", "titan"], avoid)[0][0]
        routing._remember(routing._served, rid, host)
        routing._hosts[self.deployment_name] = set(self.hosts)
        call = Call(self.engine, host, text, self.dies_after.get(host), len(self.calls) < self.full_for)
        self.calls.append(call)
        return call


@pytest.fixture(autouse=True)
def clean_routing():
    tables = (routing._suspect, routing._avoid, routing._hosts)
    for table in tables:
        table.clear()
    yield
    for table in tables:
        table.clear()


async def speak_all(stream: TTSStream) -> list[bytes]:
    return [await stream.first()] + [p async for p in stream.rest()]


async def speak(handle, **kwargs) -> tuple[TTSStream, list[bytes]]:
    stream = TTSStream(handle, TEXT, "pcm", suspect_s=3.0, **kwargs)
    return stream, await speak_all(stream)


@ASYNC
async def test_a_sentence_late_on_a_dead_node_is_hedged_to_the_other(piper):
    handle = TwoNodeHandle(piper, {"panda": 1})
    policy = HedgePolicy(initial_s=0.3)
    stream, pieces = await asyncio.wait_for(speak(handle, piece_timeout_s=30, hedge=policy), 20)
    assert len(pieces) == 3 and all(pieces)  # one piece per sentence, none twice
    assert [(c.host, c.text) for c in handle.calls] == [
        ("panda", TEXT), ("titan", "It is seven o'clock. Time to get up.")]
    assert handle.calls[0].cancelled  # the silent call is given up
    assert stream.host == "panda" and stream.resumed == 1
    assert "panda" in routing.suspected()  # new calls go to titan straight away
    # full bucket at the first sentence, one hedge spent, two sentences earned back
    assert len(policy.waits) == 3 and policy.tokens == pytest.approx(policy.burst - 1 + 2 * policy.ratio)


@ASYNC
async def test_without_hedge_budget_the_piece_deadline_moves_the_stream(piper):
    handle = TwoNodeHandle(piper, {"panda": 1})
    policy = HedgePolicy(initial_s=0.1, burst=0)
    stream, pieces = await asyncio.wait_for(speak(handle, piece_timeout_s=1.0, hedge=policy), 20)
    assert len(pieces) == 3 and [c.host for c in handle.calls] == ["panda", "titan"]
    assert stream.resumed == 1
    assert "panda" not in routing.suspected()  # merely slow: not suspected for everyone


@ASYNC
async def test_a_healthy_stream_is_not_hedged(piper):
    handle = TwoNodeHandle(piper, {})
    stream, pieces = await speak(handle, piece_timeout_s=30, hedge=HedgePolicy(initial_s=5))
    assert len(pieces) == 3 and [c.host for c in handle.calls] == ["panda"]
    assert stream.resumed == 0


@ASYNC
async def test_no_hedge_when_the_late_replica_is_the_only_one(piper):
    """Panda is down: a hedge would only queue behind the slow call on titan."""
    handle = TwoNodeHandle(piper, {"titan": 1}, hosts=("titan",))
    policy = HedgePolicy(initial_s=0.1)
    stream = TTSStream(handle, TEXT, "pcm", piece_timeout_s=0.8, attempts=1, hedge=policy)
    with pytest.raises(APIError) as err:
        await asyncio.wait_for(speak_all(stream), 10)
    assert err.value.status == 504  # the piece deadline, with no copy sent anywhere
    assert [c.host for c in handle.calls] == ["titan"] and policy.tokens == policy.burst


@ASYNC
async def test_both_nodes_silent_ends_in_a_504(piper):
    handle = TwoNodeHandle(piper, {"panda": 0, "titan": 0})
    stream = TTSStream(handle, TEXT, "pcm", piece_timeout_s=0.5, attempts=2,
                       hedge=HedgePolicy(initial_s=0.1))
    with pytest.raises(APIError) as err:
        await asyncio.wait_for(stream.first(), 10)
    assert err.value.status == 504
    assert all(c.cancelled for c in handle.calls)


@ASYNC
async def test_full_queues_are_waited_out_within_the_budget(piper):
    handle = TwoNodeHandle(piper, {}, full_for=3)
    stream, pieces = await speak(handle, piece_timeout_s=30, queue_wait_s=2.0)
    assert len(pieces) == 3 and len(handle.calls) == 4  # three refusals, then room


@ASYNC
async def test_full_queues_past_the_budget_raise_for_a_503(piper):
    handle = TwoNodeHandle(piper, {}, full_for=100)
    with pytest.raises(BackPressureError):
        await speak(handle, piece_timeout_s=30, queue_wait_s=0.3)
    assert 2 <= len(handle.calls) <= 5  # backing off, not spinning


def test_hedge_delay_follows_recent_waits_with_a_floor():
    policy = HedgePolicy(min_s=0.3, initial_s=1.0, factor=1.5)
    assert policy.delay_s() == 1.0  # too few samples yet
    for _ in range(100):
        policy.observe(0.1)
    assert policy.delay_s() == 0.3  # 1.5 x 0.1 is under the floor
    for _ in range(100):
        policy.observe(0.8)
    assert policy.delay_s() == pytest.approx(1.2)  # the slow model hedges late


def test_hedge_budget_is_a_share_of_calls():
    policy = HedgePolicy(ratio=0.1, burst=2)
    assert policy.take() and policy.take() and not policy.take()
    for _ in range(10):
        policy.observe(0.1)
    assert policy.take() and not policy.take()
