"""TTS calls that survive a dead, stalled or slow replica, and admission under overload.

A text is split once, here on the gateway side (``tts_sentences``), and each
sentence is one replica call that answers a ``SpeechPiece`` with its index
(``SpeechStream``). The first sentence is asked alone, so the first audio is as
early as one sentence allows; from then on sentence i is awaited while the next
ones are already asked, so there is no gap between sentences.

Serve retries a call only when its replica died before accepting it; once
accepted, a node's death fails it, and only after Ray notices (seconds). So
each sentence is watched here:

* hedging: when the caller has waited for a sentence longer than usual
  (``HedgePolicy``), it is asked of the other node too, and whichever answers
  first is kept; the other call is cancelled. A node that just died costs one
  hedge delay, not Ray's detection time: once it is suspected, the sentences
  already asked of it are copied as soon as the caller waits for them;
* retry: when a replica dies or stalls past the piece deadline, the sentence
  is asked again on another node. Only sentences not yet delivered are ever
  asked again, so the speech has no gap and no repeat.

Both steer PreferredHostRouter away from the node that failed, through the
caller's RoutingState.

Admission (``ServiceMeter``): a new request is refused at once with 503 and
Retry-After when the sentences already in flight would take longer than
``SERVE_SPEECH__ADMISSION_WAIT_S`` at the service rate measured here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from typing import AsyncIterator

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.metrics import ModelUnavailable
from deployments.settings import SpeechSettings
from deployments.text import CancelKey
from deployments.results import SpeechPiece
from graphs.http import APIError
from graphs.routing import RoutingState, current_request_id

log = logging.getLogger("ray.serve")

# ModelUnavailable: a replica on a node without the model's weights refuses; try the other.
REPLICA_LOST = (ActorDiedError, ActorUnavailableError, RayActorError, ReplicaUnavailableError,
                ModelUnavailable)


class HedgePolicy:
    """When a late sentence is worth asking of the other node as well ("hedged requests").

    The delay is ``factor`` times the recent 90th-percentile time a caller waited for
    a sentence (at least ``min_s``), so a slow model hedges late. Waits are counted
    per ``units`` of text (a sentence of ``TYPICAL_CHARS`` or fewer is one unit, a
    longer one more): synthesis grows with the text, and a fixed delay copied every
    long sentence of a voice reply. Until it has seen ``MIN_SAMPLES`` sentences it
    does not know the model's speed and waits ``initial_s`` per unit: a hedge on a
    healthy cluster is a second full synthesis, and a 1 s start hedged every first
    sentence of Kokoro on CPU (~1 s each), slowing them all.

    A token bucket earns ``ratio`` of a hedge per sentence (up to ``burst``), so
    hedging adds at most that share of load and cannot push a busy cluster into
    overload. It starts with ``tokens`` (one), not full: the first sentences are
    the ones whose speed is unknown, and on a slow CPU ten of them were copied,
    each copy a full synthesis on the same cores. A copy from a node already
    suspected of being lost is failover, not a bet, and spends nothing
    (``SpeechStream._hedge``).
    """

    SAMPLES = 200
    MIN_SAMPLES = 8
    TYPICAL_CHARS = 40

    def __init__(self, min_s: float = 0.3, initial_s: float = 3.0, factor: float = 1.5,
                 ratio: float = 0.1, burst: float = 10.0, tokens: float = 1.0):
        self.min_s, self.initial_s, self.factor = min_s, initial_s, factor
        self.ratio, self.burst, self.tokens = ratio, burst, min(burst, tokens)
        self.waits: deque[float] = deque(maxlen=self.SAMPLES)  # seconds per unit

    @classmethod
    def units(cls, text: str) -> float:
        """How much synthesis ``text`` is, in sentences of ``TYPICAL_CHARS`` (at least one)."""
        return max(1.0, len(text) / cls.TYPICAL_CHARS)

    def observe(self, wait_s: float | None, units: float = 1.0) -> None:
        """One sentence of ``units`` delivered; ``wait_s``: how long its caller waited for
        it (None: not at all)."""
        if wait_s is not None:
            self.waits.append(wait_s / units)
        self.tokens = min(self.burst, self.tokens + self.ratio)

    def delay_s(self, units: float = 1.0) -> float:
        """How long a caller waits for a sentence of ``units`` before it is hedged."""
        if len(self.waits) < self.MIN_SAMPLES:
            return self.initial_s * units
        p90 = sorted(self.waits)[int(0.9 * (len(self.waits) - 1))]
        return max(self.min_s, self.factor * p90 * units)

    def take(self) -> bool:
        """Spend a hedge if the budget allows one."""
        if self.tokens < 1 - 1e-9:  # ten tenths make a whole hedge
            return False
        self.tokens -= 1
        return True


class ServiceMeter:
    """How fast one deployment completes this process's sentences, and how many are in flight.

    The interval between completions is averaged (EWMA) only while sentences
    are outstanding: an idle stretch does not count, so under load it is the
    time per sentence the deployment serves. ``wait_s`` is then the time the
    sentences in flight take at that rate (Little's law), which is about what
    a new request's first sentence waits. Until one completion is measured, a
    request is admitted only when nothing else is in flight.
    """

    def __init__(self, alpha: float = 0.2):
        self.alpha = alpha
        self.in_flight = 0
        self.interval_s: float | None = None
        self._mark = 0.0  # the last completion, or when work resumed after an idle stretch
        self._sheds: deque[float] = deque()  # when requests were shed, over the last second

    def started(self) -> None:
        if self.in_flight == 0:
            self._mark = time.monotonic()
        self.in_flight += 1

    def finished(self, completed: bool) -> None:
        self.in_flight -= 1
        if completed:
            now = time.monotonic()
            interval, self._mark = now - self._mark, now
            self.interval_s = interval if self.interval_s is None else (
                (1 - self.alpha) * self.interval_s + self.alpha * interval)

    @property
    def rate_per_s(self) -> float | None:
        return None if not self.interval_s else 1.0 / self.interval_s

    def wait_s(self) -> float:
        if self.in_flight == 0:
            return 0.0
        return math.inf if self.interval_s is None else self.in_flight * self.interval_s

    def shed(self) -> int:
        """Count a refused request; how many were refused over the last second."""
        now = time.monotonic()
        self._sheds.append(now)
        while self._sheds[0] < now - 1.0:
            self._sheds.popleft()
        return len(self._sheds)

    def retry_after_s(self, limit_s: float, most_s: int = 10) -> int:
        """When a refused caller should come back: after the excess wait, and late enough
        that the callers refused each second return no faster than they can be served
        (each refusal still costs the gateway CPU).

        Where that is past ``most_s``, the callers are spread evenly over the seconds up
        to it: told the same ``most_s``, a crowd would come back at one instant, and the
        last of it would wait for all the others' refusals (issue 12: shed at once).
        """
        wait, rate = self.wait_s(), self.rate_per_s
        refused = self.shed()
        spread = refused / rate if rate else 1.0
        soonest = max(1, min(most_s, math.ceil(1.0 if math.isinf(wait) else wait - limit_s)))
        if spread <= most_s:
            return max(soonest, math.ceil(spread))
        return soonest + refused % (most_s - soonest + 1)


class TTSCalls:
    """One caller process's TTS traffic: per deployment a hedge policy and a service meter,
    and the RoutingState its routers report to. The Gateway owns one; so does the VoiceGraph."""

    def __init__(self, settings: SpeechSettings, routing: RoutingState):
        self.settings, self.routing = settings, routing
        self.hedges: dict[str, HedgePolicy] = {}
        self.meters: dict[str, ServiceMeter] = {}

    def hedge(self, deployment: str) -> HedgePolicy:
        if deployment not in self.hedges:
            self.hedges[deployment] = HedgePolicy(min_s=self.settings.hedge_min_s,
                                                  initial_s=self.settings.hedge_initial_s,
                                                  ratio=self.settings.hedge_ratio)
        return self.hedges[deployment]

    def meter(self, deployment: str) -> ServiceMeter:
        return self.meters.setdefault(deployment, ServiceMeter())

    def admit(self, deployment: str) -> None:
        """Refuse (503, Retry-After) a request that would wait past the admission deadline.

        Call it right before ``stream``, with no await between, so the request's
        first sentence is in flight before the next request is judged.
        """
        meter = self.meter(deployment)
        wait, limit = meter.wait_s(), self.settings.admission_wait_s
        if wait > limit:
            retry = meter.retry_after_s(limit)
            raise APIError(503, f"server busy: {deployment} is behind by about "
                           f"{min(wait, 99.0):.1f} s; try again in {retry} s",
                           type="overloaded", headers={"Retry-After": str(retry)})

    def stream(self, handle: DeploymentHandle, sentences: list[str], key: CancelKey,
               **synth) -> "SpeechStream":
        return SpeechStream(self, handle, sentences, key, **synth)


class CallLost(Exception):
    """Every call for one sentence failed or stalled; ``host`` is where the first one went."""

    def __init__(self, host: str | None, stalled: bool):
        super().__init__(host)
        self.host, self.stalled = host, stalled


class SpeechStream:
    """One text's sentences from a TTS deployment, as SpeechPieces in order.

    The first sentence is asked as soon as it is made (so an admission
    check right before it counts it); iterate ``pieces()``. ``host`` is the
    node whose replica spoke first; ``resumed`` counts retries and hedges that won.
    """

    def __init__(self, calls: TTSCalls, handle: DeploymentHandle, sentences: list[str],
                 key: CancelKey, attempts: int = 3, **synth):
        self.handle, self.sentences, self.key, self.synth = handle, sentences, key, synth
        self.name = handle.deployment_name
        self.settings, self.routing, self.attempts = calls.settings, calls.routing, attempts
        self.hedge, self.meter = calls.hedge(self.name), calls.meter(self.name)
        self.host: str | None = None
        self.resumed = 0
        self.request_id = current_request_id()
        self._asked: dict[int, asyncio.Task] = {}
        self._awaited: dict[int, asyncio.Event] = {}  # set once the caller waits for the sentence
        self._ask_through(0, ahead=0)

    def _ask_through(self, index: int, ahead: int | None = None) -> None:
        """Have sentence ``index`` and the ``ahead`` after it asked (``prefetch_sentences``)."""
        ahead = self.settings.prefetch_sentences if ahead is None else ahead
        last = min(len(self.sentences), index + 1 + ahead)
        for i in range(index, last):
            if i not in self._asked:
                self.meter.started()
                self._awaited[i] = asyncio.Event()
                task = asyncio.ensure_future(self._sentence(i, self._awaited[i]))
                task.add_done_callback(self._booked)
                self._asked[i] = task

    def _booked(self, task: asyncio.Task) -> None:
        self.meter.finished(completed=not task.cancelled() and task.exception() is None)

    async def pieces(self) -> AsyncIterator[SpeechPiece]:
        """The sentences in order. The first goes alone: one asked beside it reached the
        replica while it computed and cost its first audio 1-3 ms (Piper on CPU,
        docs/performance.md); the next ones are asked once it is here."""
        try:
            for i in range(len(self.sentences)):
                self._awaited.pop(i).set()
                piece = await self._asked.pop(i)
                self._ask_through(i + 1)
                self.host = self.host or piece.host
                yield piece
        finally:
            for task in self._asked.values():
                task.cancel()

    async def _sentence(self, index: int, awaited: asyncio.Event) -> SpeechPiece:
        """Sentence ``index``, from whichever node answers it first, retried on another
        node when a replica is lost or stalls, waiting out full queues for a while."""
        attempt, backoff = 1, 0.05
        queue_until = time.monotonic() + self.settings.queue_wait_s
        while True:
            try:
                return await self._race(index, awaited)
            except BackPressureError:
                # Every replica's queue is full. Often a burst (a node starting up
                # takes the CPU): wait a little for room, then the gateway answers
                # 503 with Retry-After.
                if time.monotonic() + backoff > queue_until:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 0.5)
            except CallLost as lost:
                log.warning("%s sentence %d failed on %s (%s), attempt %d", self.name, index,
                            lost.host or "?", "stalled" if lost.stalled else "replica lost", attempt)
                if attempt == self.attempts:
                    raise APIError(
                        504 if lost.stalled else 503,
                        f"{self.name} failed {attempt} times "
                        f"({'no audio within the deadline' if lost.stalled else 'replica lost'})",
                        type="timeout" if lost.stalled else "unavailable",
                        headers={"Retry-After": "1"},
                    ) from None
                self.routing.steer_away(self.request_id, lost.host)
                if not lost.stalled:  # lost, not merely slow
                    self.routing.suspect(lost.host, self.settings.suspect_s)
                self.resumed += 1
                attempt += 1

    def _call(self, index: int) -> tuple[object, str]:
        """Ask for sentence ``index``; returns the call and its id, under which the
        router reports where it went (Serve's ``session_id``: one per call)."""
        call_id = uuid.uuid4().hex
        call = self.handle.options(session_id=call_id).synthesize.remote(
            index, self.sentences[index], key=self.key, **self.synth)
        return call, call_id

    async def _race(self, index: int, awaited: asyncio.Event) -> SpeechPiece:
        """Sentence ``index`` from one call, or from a hedge on another node if that is first.

        The hedge clock starts when the caller starts waiting for the sentence, not
        when it was asked: a sentence asked ahead is meant to take its time (on CPU
        it even waits for the first sentence, ``TTSReplica.turn``), and a copy of
        it would only compete with the sentence the caller is waiting for. Where the
        call went to a node already suspected, the copy goes at once, so a dead node
        costs one hedge delay in all, not one per sentence asked ahead.

        Raises CallLost past the piece deadline (``piece_timeout_s`` per unit of
        text, as the hedge delay) or when every call in the race was lost,
        BackPressureError when the last one was refused for full queues.
        """
        units = HedgePolicy.units(self.sentences[index])
        deadline = time.monotonic() + self.settings.piece_timeout_s * units
        first, first_id = self._call(index)
        racing = {asyncio.ensure_future(first): first}
        calls = [first]  # the first call, then its hedge
        caller = asyncio.ensure_future(awaited.wait())
        waited_from: float | None = None  # when the caller started waiting
        hedge_at: float | None = None  # when to try a hedge, once the caller waits
        lost: BaseException | None = None
        try:
            while racing:
                if waited_from is None and awaited.is_set():
                    waited_from = time.monotonic()
                    suspect = self.routing.served_by(first_id) in self.routing.suspected()
                    hedge_at = waited_from + (0.0 if suspect else self.hedge.delay_s(units))
                wake = deadline if hedge_at is None else min(deadline, hedge_at)
                watch = set(racing) | ({caller} if waited_from is None else set())
                done, _ = await asyncio.wait(watch, timeout=max(0.0, wake - time.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done - {caller}:
                    call = racing.pop(task)
                    try:
                        piece = task.result()
                    except (*REPLICA_LOST, BackPressureError) as exc:
                        lost = exc  # the others in the race may still answer
                        continue
                    self._settle(units, call is not first, first_id, waited_from)
                    return piece
                now = time.monotonic()
                if racing and now >= deadline:
                    raise CallLost(self.routing.served_by(first_id), stalled=True)
                if racing and hedge_at is not None and now >= hedge_at:
                    hedge_at = None  # one hedge per call, tried once
                    self._hedge(index, first_id, racing, calls)
            if isinstance(lost, BackPressureError):
                raise lost
            raise CallLost(self.routing.served_by(first_id), stalled=False)
        finally:
            caller.cancel()
            for task, call in racing.items():
                task.cancel()
                call.cancel()

    def _hedge(self, index: int, first_id: str, racing: dict, calls: list) -> None:
        """Ask sentence ``index`` of another node too, if one has a replica and the budget allows."""
        late = self.routing.served_by(first_id)
        # Only where another node has a replica: a copy queued behind the slow
        # call on the same replica would only add load.
        # A copy from a suspected node is failover and spends no budget.
        elsewhere = self.routing.replica_hosts(self.name) - {late}
        if elsewhere and (late in self.routing.suspected() or self.hedge.take()):
            self.routing.steer_away(self.request_id, late)
            log.info("%s: sentence %d late on %s, hedging", self.name, index, late or "?")
            copy, _ = self._call(index)
            calls.append(copy)
            racing[asyncio.ensure_future(copy)] = copy

    def _settle(self, units: float, hedge_won: bool, first_id: str, waited_from: float | None
                ) -> None:
        """Book the race: the caller's wait for a sentence of ``units`` (None: the piece
        came before it was awaited), and a hedge that beat a silent call suspects its node."""
        self.hedge.observe(None if waited_from is None else time.monotonic() - waited_from,
                           units)
        if hedge_won:
            self.resumed += 1
            self.routing.suspect(self.routing.served_by(first_id), self.settings.suspect_s)
