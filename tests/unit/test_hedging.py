"""TTS sentence calls: hedged to the other node when late, retried when lost, asked ahead.

The deployment handle here is a stand-in for Serve's (it routes by the same
RoutingState that PreferredHostRouter reads and reports to); synthesis is the
real Piper engine. A "dead" node is one whose calls never answer, as a
SIGKILLed machine looks to its caller until Ray notices.
"""

from __future__ import annotations

import asyncio

import pytest
from ray.serve.exceptions import BackPressureError

from deployments.piper import PiperEngine
from deployments.settings import SpeechSettings
from deployments.text import CancelKey, tts_sentences
from deployments.results import SpeechPiece
from graphs.failover import HedgePolicy, TTSCalls
from graphs.http import APIError
from graphs.routing import RoutingState, current_request_id, rank_by_host

ASYNC = pytest.mark.asyncio(loop_scope="module")

TEXT = "Good morning. It is seven o'clock. Time to get up."
SENTENCES = tts_sentences(TEXT)


@pytest.fixture(scope="module")
def piper():
    engine = PiperEngine("en_US-joe-medium")
    engine.load()
    return engine


class Call:
    """One sentence asked of the replica on ``host``: its piece, or silence when the
    node is dead, or a full-queue refusal."""

    def __init__(self, engine, host: str, index: int, sentence: str, dead: bool, full: bool,
                 delay_s: float = 0.0):
        self.host, self.index, self.sentence = host, index, sentence
        self.engine, self.dead, self.full, self.cancelled = engine, dead, full, False
        self.delay_s = delay_s
        self.asked_at = asyncio.get_running_loop().time()

    def __await__(self):
        return self._answer().__await__()

    async def _answer(self) -> SpeechPiece:
        if self.full:  # as Serve's router says when every replica's queue is full
            raise BackPressureError(num_queued_requests=8, max_queued_requests=8)
        if self.dead:
            await asyncio.Event().wait()  # never answers
        pcm = await asyncio.to_thread(self.engine.synthesize, self.sentence)
        since = asyncio.get_running_loop().time() - self.asked_at
        await asyncio.sleep(self.delay_s - since)  # a no-op when already past
        return SpeechPiece(self.index, pcm.tobytes(), self.engine.sample_rate, self.host)

    def cancel(self) -> None:
        self.cancelled = True


class TwoNodeHandle:
    """Replicas on panda (preferred) and titan, chosen like PreferredHostRouter does.

    ``dies_after[host]``: that node answers so many calls, then none.
    ``slow[index]``: every call for that sentence answers no sooner than so many seconds
    after it is asked, its synthesis included, so that a test's timings hold on a machine
    slow or busy enough to make Piper itself take most of them (CI's did).
    """

    deployment_name = "PiperTTS"

    def __init__(self, engine, routing: RoutingState, dies_after: dict[str, int],
                 full_for: int = 0, hosts: tuple[str, ...] = ("panda", "titan"),
                 slow: dict[int, float] | None = None):
        self.engine, self.routing, self.dies_after = engine, routing, dict(dies_after)
        self.slow = slow or {}
        self.calls: list[Call] = []
        self.full_for, self.hosts = full_for, list(hosts)

    def options(self, session_id: str) -> "TwoNodeHandle":
        self.session_id = session_id
        return self

    @property
    def synthesize(self):
        return self

    def remote(self, index: int, sentence: str, key: CancelKey, **synth) -> Call:
        host = rank_by_host(self.hosts, lambda h: h, ["panda", "titan"],
                            self.routing.avoided(current_request_id()))[0][0]
        self.routing.routed(self.deployment_name, self.session_id, set(self.hosts), host)
        full = len(self.calls) < self.full_for
        left = self.dies_after.get(host)
        call = Call(self.engine, host, index, sentence, left == 0, full, self.slow.get(index, 0.0))
        if left is not None and not full:
            self.dies_after[host] = max(0, left - 1)
        self.calls.append(call)
        return call


@pytest.fixture
def routing() -> RoutingState:
    return RoutingState()


def calls_with(routing: RoutingState, policy: HedgePolicy | None = None, **settings) -> TTSCalls:
    calls = TTSCalls(SpeechSettings(**{"suspect_s": 3.0, **settings}), routing)
    if policy is not None:
        calls.hedges["PiperTTS"] = policy
    return calls


async def speak(calls: TTSCalls, handle, **kwargs):
    stream = calls.stream(handle, SENTENCES, CancelKey.new("speech"), **kwargs)
    return stream, [piece async for piece in stream.pieces()]


@ASYNC
async def test_the_first_sentence_goes_alone_and_the_next_ones_ahead_of_delivery(piper, routing):
    handle = TwoNodeHandle(piper, routing, {})
    calls = calls_with(routing, HedgePolicy(initial_s=5))
    stream = calls.stream(handle, SENTENCES, CancelKey.new("speech"))
    assert calls.meter("PiperTTS").in_flight == 1  # counted at once, for the next admission
    await asyncio.sleep(0)
    assert [c.index for c in handle.calls] == [0]  # nothing beside the first sentence
    pieces = stream.pieces()
    first = await anext(pieces)
    await asyncio.sleep(0)
    # sentence 0 is here: the two after it are asked while the caller plays it
    assert first.index == 0 and [c.index for c in handle.calls] == [0, 1, 2]
    pieces = [first, *[piece async for piece in pieces]]
    assert [p.index for p in pieces] == [0, 1, 2] and all(p.pcm for p in pieces)
    assert [c.index for c in handle.calls] == [0, 1, 2]  # each sentence asked once
    assert stream.host == "panda" and stream.resumed == 0
    assert calls.meter("PiperTTS").in_flight == 0 and calls.meter("PiperTTS").rate_per_s > 0


@ASYNC
async def test_a_sentence_late_on_a_dead_node_is_hedged_to_the_other(piper, routing):
    handle = TwoNodeHandle(piper, routing, {"panda": 1})
    policy = HedgePolicy(initial_s=1.0)  # above a busy CPU's Piper for sentence 0
    stream, pieces = await asyncio.wait_for(speak(calls_with(routing, policy), handle), 20)
    assert [p.index for p in pieces] == [0, 1, 2]  # one piece per sentence, none twice
    assert [p.host for p in pieces] == ["panda", "titan", "titan"]
    # panda answered sentence 0 and then nothing: sentences 1 and 2 (already asked
    # ahead) were asked again of titan, and only they; panda's silent calls given up
    panda = [c for c in handle.calls if c.host == "panda"]
    assert [c.index for c in panda] == [0, 1, 2] and all(c.cancelled for c in panda[1:])
    assert sorted(c.index for c in handle.calls if c.host == "titan") == [1, 2]
    assert stream.host == "panda" and stream.resumed == 2
    assert "panda" in routing.suspected()  # new calls go to titan straight away
    # one hedge spent (sentence 1's, a bet); sentence 2 left a suspected node, a copy
    # that is failover and free; three sentences earned a tenth each
    assert len(policy.waits) == 3
    assert policy.tokens == pytest.approx(1 - 1 + 3 * policy.ratio)


@ASYNC
async def test_a_sentence_asked_ahead_is_not_hedged_before_the_caller_waits_for_it(piper, routing):
    """Sentence 1 is slower than the hedge delay but done before the caller, still
    playing sentence 0, asks for it: a copy would only have added a synthesis.
    (The delay leaves a busy CPU's Piper room for sentence 0: CI's took over 0.3 s.)"""
    handle = TwoNodeHandle(piper, routing, {}, slow={1: 2.0})
    policy = HedgePolicy(initial_s=1.0)
    stream = calls_with(routing, policy).stream(handle, SENTENCES, CancelKey.new("speech"))
    pieces = []
    async for piece in stream.pieces():
        pieces.append(piece)
        if piece.index == 0:
            await asyncio.sleep(2.5)  # the caller plays sentence 0
    assert [p.index for p in pieces] == [0, 1, 2]
    assert [c.host for c in handle.calls] == ["panda"] * 3  # no copy of sentence 1
    assert policy.tokens == pytest.approx(1 + 3 * policy.ratio) and stream.resumed == 0
    assert len(policy.waits) == 1  # sentences 1 and 2 kept nobody waiting: no samples


@ASYNC
async def test_a_dead_node_costs_one_hedge_delay_for_all_the_sentences_asked_of_it(piper, routing):
    """Panda dies after sentence 0 with sentences 1 and 2 asked of it. Sentence 1's hedge
    suspects panda, so sentence 2 is copied to titan as soon as the caller waits for it,
    not one more hedge delay later."""
    handle = TwoNodeHandle(piper, routing, {"panda": 1})
    delay = 2.0
    calls = calls_with(routing, HedgePolicy(initial_s=delay), prefetch_sentences=2)
    stream, pieces = await asyncio.wait_for(speak(calls, handle), 20)
    assert [p.host for p in pieces] == ["panda", "titan", "titan"]
    assert [c.index for c in handle.calls if c.host == "panda"] == [0, 1, 2]
    asked = {(c.host, c.index): c.asked_at for c in handle.calls}
    assert asked["titan", 1] - asked["panda", 1] >= delay  # sentence 1: one hedge delay
    # sentence 2: copied once sentence 1 was heard (a synthesis later), no delay of its own
    assert asked["titan", 2] - asked["titan", 1] < delay


@ASYNC
async def test_without_hedge_budget_the_piece_deadline_moves_the_sentence(piper, routing):
    handle = TwoNodeHandle(piper, routing, {"panda": 1})
    policy = HedgePolicy(initial_s=0.1, burst=0)
    stream, pieces = await asyncio.wait_for(
        speak(calls_with(routing, policy, piece_timeout_s=2.0), handle), 20)
    assert [p.index for p in pieces] == [0, 1, 2]
    assert sorted(c.index for c in handle.calls if c.host == "titan") == [1, 2]
    assert stream.resumed == 2
    assert "panda" not in routing.suspected()  # merely slow: not suspected for everyone


@ASYNC
async def test_no_hedge_when_the_late_replica_is_the_only_one(piper, routing):
    """Panda is down: a hedge would only queue behind the slow call on titan."""
    handle = TwoNodeHandle(piper, routing, {"titan": 0}, hosts=("titan",))
    policy = HedgePolicy(initial_s=0.1)
    stream = calls_with(routing, policy, piece_timeout_s=0.8).stream(
        handle, SENTENCES, CancelKey.new("speech"), attempts=1)
    with pytest.raises(APIError) as err:
        await asyncio.wait_for(anext(stream.pieces()), 10)
    assert err.value.status == 504  # the piece deadline, with no copy sent anywhere
    assert [(c.host, c.index) for c in handle.calls] == [("titan", 0)]  # asked alone, once
    assert policy.tokens == 1  # nothing spent


@ASYNC
async def test_both_nodes_silent_ends_in_a_504(piper, routing):
    handle = TwoNodeHandle(piper, routing, {"panda": 0, "titan": 0})
    stream = calls_with(routing, HedgePolicy(initial_s=0.1), piece_timeout_s=0.5).stream(
        handle, SENTENCES, CancelKey.new("speech"), attempts=2)
    pieces = stream.pieces()
    with pytest.raises(APIError) as err:
        await asyncio.wait_for(anext(pieces), 10)
    assert err.value.status == 504
    await asyncio.sleep(0)  # the calls' tasks see their cancel
    assert all(c.cancelled for c in handle.calls)


@ASYNC
async def test_full_queues_are_waited_out_within_the_budget(piper, routing):
    handle = TwoNodeHandle(piper, routing, {}, full_for=3)
    stream, pieces = await speak(calls_with(routing, HedgePolicy(initial_s=30), queue_wait_s=2.0),
                                 handle)
    assert len(pieces) == 3 and len(handle.calls) == 6  # three refusals, then room


@ASYNC
async def test_full_queues_past_the_budget_raise_for_a_503(piper, routing):
    handle = TwoNodeHandle(piper, routing, {}, full_for=100)
    with pytest.raises(BackPressureError):
        await speak(calls_with(routing, queue_wait_s=0.3), handle)
    assert 2 <= len(handle.calls) <= 10  # backing off, not spinning


def test_hedge_delay_follows_recent_waits_with_a_floor():
    policy = HedgePolicy(min_s=0.3, initial_s=1.0, factor=1.5)
    assert policy.delay_s() == 1.0  # too few samples yet
    for _ in range(100):
        policy.observe(0.1)
    assert policy.delay_s() == 0.3  # 1.5 x 0.1 is under the floor
    for _ in range(100):
        policy.observe(0.8)
    assert policy.delay_s() == pytest.approx(1.2)  # the slow model hedges late


def test_hedge_delay_is_learned_after_a_few_sentences():
    policy = HedgePolicy(min_s=0.3, initial_s=3.0, factor=1.5)
    for _ in range(HedgePolicy.MIN_SAMPLES - 1):
        policy.observe(1.0)
        assert policy.delay_s() == 3.0  # the model's speed is not known yet
    policy.observe(1.0)
    assert policy.delay_s() == pytest.approx(1.5)


def test_the_first_sentences_wait_the_configured_initial_delay():
    policy = calls_with(RoutingState(), hedge_initial_s=2.5).hedge("KokoroTTS")
    assert policy.delay_s() == 2.5


def test_hedge_budget_is_a_share_of_calls():
    policy = HedgePolicy(ratio=0.1, burst=2, tokens=2)
    assert policy.take() and policy.take() and not policy.take()
    for _ in range(10):
        policy.observe(0.1)
    assert policy.take() and not policy.take()


def test_the_budget_starts_with_one_hedge():
    """The first sentences are the ones whose speed is unknown: on a slow CPU each was
    copied, a second full synthesis on the same cores (every sentence of a voice reply)."""
    policy = HedgePolicy()
    assert policy.take() and not policy.take()
    for _ in range(10):
        policy.observe(1.0)
    assert policy.take() and not policy.take()


def test_a_long_sentence_waits_in_proportion_to_its_text():
    policy = HedgePolicy(min_s=0.3, initial_s=3.0, factor=1.5)
    short, long = HedgePolicy.units("Good morning."), HedgePolicy.units("x" * 100)
    assert short == 1 and long == 2.5
    assert policy.delay_s(short) == 3.0 and policy.delay_s(long) == 7.5  # not learned yet
    for _ in range(HedgePolicy.MIN_SAMPLES):
        policy.observe(2.5, long)  # a long sentence's wait counts per unit: 1 s
    assert policy.delay_s(short) == pytest.approx(1.5)
    assert policy.delay_s(long) == pytest.approx(3.75)


@ASYNC
async def test_a_long_sentence_is_not_copied_at_a_short_sentences_delay(piper, routing):
    """Sentence 0 is long (nearly three units: a 4.4 s delay) and slower than one unit's
    hedge delay (1.5 s), but not than its own (it answers after 2 s): nothing is copied
    (a fixed delay copied every long sentence)."""
    long = ("Tomorrow morning the plumber comes at nine to look at the leaking pipe "
            "under the kitchen sink, so leave the door open.")
    assert HedgePolicy.units(long) > 2.9
    handle = TwoNodeHandle(piper, routing, {}, slow={0: 2.0})
    policy = HedgePolicy(initial_s=1.5)
    stream = calls_with(routing, policy).stream(handle, [long], CancelKey.new("speech"))
    pieces = [piece async for piece in stream.pieces()]
    assert [p.index for p in pieces] == [0] and [c.host for c in handle.calls] == ["panda"]
    assert stream.resumed == 0 and policy.tokens == pytest.approx(1 + policy.ratio)


@ASYNC
async def test_a_long_sentence_has_a_longer_deadline(piper, routing):
    """The piece deadline counts per unit of text too: a long sentence slower than one
    unit's deadline but not than its own is waited for, not asked again (on a slow CPU,
    Kokoro's long sentences passed a fixed deadline on every attempt and ended in a 504)."""
    long = ("Tomorrow morning the plumber comes at nine to look at the leaking pipe "
            "under the kitchen sink, so leave the door open.")
    handle = TwoNodeHandle(piper, routing, {}, slow={0: 2.0})
    policy = HedgePolicy(initial_s=30)
    stream = calls_with(routing, policy, piece_timeout_s=1.5).stream(
        handle, [long], CancelKey.new("speech"), attempts=1)
    pieces = [piece async for piece in stream.pieces()]
    assert [p.index for p in pieces] == [0] and len(handle.calls) == 1
