"""TTS streams that survive a dead, stalled or slow replica, sentence by sentence.

Serve retries a request only when its replica died before accepting it; once
accepted, a node's death fails it, and only after Ray notices (seconds). So
the gateway streams TTS itself:

* hedging: when the next sentence is later than usual (``HedgePolicy``), the
  same remaining sentences are asked of the other node too, and whichever
  answers first is kept; the other call is cancelled. A node that just died
  costs one hedge delay, not Ray's detection time;
* retry: when a replica dies or stalls past the piece deadline, the stream is
  opened again for the sentences not yet sent, on another node.

Both steer PreferredHostRouter away from the node that failed. Synthesis is a
pure function of the text, so the continued stream has no gap and no repeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import AsyncIterator

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments import routing
from deployments.metrics import ModelUnavailable
from deployments.settings import SpeechSettings
from deployments.text import tts_sentences
from graphs.http import APIError

log = logging.getLogger("ray.serve")

# ModelUnavailable: a replica on a node without the model's weights refuses; try the other.
REPLICA_LOST = (ActorDiedError, ActorUnavailableError, RayActorError, ReplicaUnavailableError,
                ModelUnavailable)
STREAMABLE = ("pcm", "wav")  # one piece per sentence (deployments.tts.TTSReplica.stream)


class HedgePolicy:
    """When a late sentence is worth asking of the other node as well ("hedged requests").

    The delay is ``factor`` times the recent 90th-percentile wait for a
    sentence (at least ``min_s``; ``initial_s`` until there are enough
    samples), so a slow model hedges late. A token bucket earns ``ratio`` of a
    hedge per sentence (up to ``burst``), so hedging adds at most that share
    of load and cannot push a busy cluster into overload.
    """

    SAMPLES = 200

    def __init__(self, min_s: float = 0.3, initial_s: float = 1.0, factor: float = 1.5,
                 ratio: float = 0.1, burst: float = 10.0):
        self.min_s, self.initial_s, self.factor = min_s, initial_s, factor
        self.ratio, self.burst, self.tokens = ratio, burst, burst
        self.waits: deque[float] = deque(maxlen=self.SAMPLES)

    def observe(self, wait_s: float) -> None:
        self.waits.append(wait_s)
        self.tokens = min(self.burst, self.tokens + self.ratio)

    def delay_s(self) -> float:
        if len(self.waits) < 20:
            return self.initial_s
        p90 = sorted(self.waits)[int(0.9 * (len(self.waits) - 1))]
        return max(self.min_s, self.factor * p90)

    def take(self) -> bool:
        """Spend a hedge if the budget allows one."""
        if self.tokens < 1 - 1e-9:  # ten tenths make a whole hedge
            return False
        self.tokens -= 1
        return True


_policies: dict[str, HedgePolicy] = {}


def hedge_policy(deployment: str, speech: SpeechSettings) -> HedgePolicy:
    """This process's policy for one TTS deployment, shared by all its requests."""
    if deployment not in _policies:
        _policies[deployment] = HedgePolicy(min_s=speech.hedge_min_s, ratio=speech.hedge_ratio)
    return _policies[deployment]


class TTSStream:
    """One TTS response from a deployment's ``stream`` method, resumable by sentence.

    ``await first()`` opens it and returns the first piece (so bad input is
    still a 4xx); iterate ``rest()`` for the others. ``host`` is the node whose
    replica spoke first; ``resumed`` counts retries and hedges that won.
    """

    def __init__(self, handle: DeploymentHandle, text: str, fmt: str, piece_timeout_s: float,
                 suspect_s: float = 3.0, attempts: int = 3, hedge: HedgePolicy | None = None,
                 queue_wait_s: float = 0.0, **kwargs):
        self.handle, self.text, self.fmt, self.kwargs = handle, text, fmt, kwargs
        self.piece_timeout_s, self.suspect_s, self.attempts = piece_timeout_s, suspect_s, attempts
        self.hedge, self.queue_wait_s = hedge, queue_wait_s
        self.sentences = tts_sentences(text)
        self.sent = 0  # sentences delivered (pcm/wav)
        self.yielded = 0  # pieces delivered
        self.host: str | None = None
        self.resumed = 0
        self.request_id = routing.current_request_id()
        self._pieces = self._run()

    async def first(self) -> bytes:
        try:
            return await self._pieces.__anext__()
        except StopAsyncIteration:
            return b""

    async def rest(self) -> AsyncIterator[bytes]:
        async for piece in self._pieces:
            yield piece

    def _open(self, fmt: str):
        remaining = " ".join(self.sentences[self.sent:]) if fmt in STREAMABLE else self.text
        return self.handle.options(stream=True).stream.remote(text=remaining, fmt=fmt, **self.kwargs)

    async def _run(self) -> AsyncIterator[bytes]:
        fmt = self.fmt
        stream, on = self._open(fmt), None
        attempt, backoff = 1, 0.05
        queue_until = time.monotonic() + self.queue_wait_s
        while True:
            if fmt in STREAMABLE and self.sent == len(self.sentences):
                stream.cancel()  # every sentence is out: no need to wait for the end marker
                return
            try:
                piece, stream, on = await self._next_piece(stream, on, fmt)
            except StopAsyncIteration:
                return
            except BackPressureError:
                # Every replica's queue is full. Often a burst (a node starting up
                # takes the CPU): wait a little for room, then the gateway answers
                # 503 with Retry-After.
                if time.monotonic() + backoff > queue_until:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 0.5)
                stream, on = self._open(fmt), None
                continue
            except (asyncio.TimeoutError, *REPLICA_LOST) as exc:
                stream.cancel()
                failed = on or routing.served_by(self.request_id)
                log.warning("%s stream broke after %d sentences on %s (%s), attempt %d",
                            self.handle.deployment_name, self.sent, failed or "?",
                            type(exc).__name__, attempt)
                if attempt == self.attempts:
                    stalled = isinstance(exc, asyncio.TimeoutError)
                    raise APIError(
                        504 if stalled else 503,
                        f"{self.handle.deployment_name} failed {attempt} times "
                        f"({'no audio within the deadline' if stalled else 'replica lost'})",
                        type="timeout" if stalled else "unavailable",
                        headers={"Retry-After": "1"},
                    ) from None
                routing.steer_away(self.request_id, failed)
                if not isinstance(exc, asyncio.TimeoutError):  # lost, not merely slow
                    routing.suspect(failed, self.suspect_s)
                self.resumed += 1
                attempt += 1
                if fmt == "wav" and self.sent:
                    fmt = "pcm"  # the header went out with the first sentence
                stream, on = self._open(fmt), None
                continue
            self.host = self.host or on
            if fmt in STREAMABLE:
                self.sent += 1
            if piece:
                self.yielded += 1
                yield piece

    async def _next_piece(self, stream, on: str | None, fmt: str):
        """The next piece of ``stream``, or of a hedge opened on another node if that is first.

        Returns (piece, the stream it came from, that stream's host). Raises
        StopAsyncIteration at the end, TimeoutError past the piece deadline,
        a REPLICA_LOST error (or BackPressureError) when every call in the race failed.
        """
        asked = time.monotonic()
        deadline = asked + self.piece_timeout_s
        racing = {asyncio.ensure_future(stream.__anext__()): stream}
        hosts = {stream: on}
        can_hedge = self.hedge is not None and (fmt in STREAMABLE or not self.yielded)
        wait = self.hedge.delay_s() if can_hedge else self.piece_timeout_s
        lost: BaseException | None = None
        try:
            while racing:
                timeout = max(0.0, min(wait, deadline - time.monotonic()))
                done, _ = await asyncio.wait(racing, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    source = racing.pop(task)
                    try:
                        piece = task.result()
                    except (*REPLICA_LOST, BackPressureError) as exc:
                        lost = exc  # the others in the race may still answer
                        continue
                    winner = hosts.get(source) or routing.served_by(self.request_id)
                    self._settle(hosts, source, asked)
                    return piece, source, winner
                if not done:
                    if time.monotonic() >= deadline:
                        raise asyncio.TimeoutError
                    late = hosts[stream] = hosts[stream] or routing.served_by(self.request_id)
                    # Only where another node has a replica: a copy queued behind the slow
                    # call on the same replica would only add load.
                    elsewhere = routing.replica_hosts(self.handle.deployment_name) - {late}
                    if can_hedge and len(hosts) == 1 and elsewhere and self.hedge.take():
                        copy = self._hedge(late, hosts, fmt)
                        racing[asyncio.ensure_future(copy.__anext__())] = copy
                    wait = deadline - time.monotonic()
            raise lost  # every call in the race was lost
        finally:
            for task, source in racing.items():
                task.cancel()
                source.cancel()

    def _hedge(self, late: str | None, hosts: dict, fmt: str):
        """Ask another node than ``late`` for the same remaining sentences."""
        routing.steer_away(self.request_id, late)
        copy = self._open("pcm" if fmt == "wav" and self.sent else fmt)
        hosts[copy] = None  # known once it answers
        log.info("%s: sentence %d late on %s, hedging", self.handle.deployment_name, self.sent,
                 late or "?")
        return copy

    def _settle(self, hosts: dict, winner_stream, asked: float) -> None:
        """Book the race: the wait, and a hedge that beat a silent call suspects its node."""
        if self.hedge is not None:
            self.hedge.observe(time.monotonic() - asked)
        if len(hosts) > 1 and winner_stream is not next(iter(hosts)):
            self.resumed += 1
            routing.suspect(next(iter(hosts.values())), self.suspect_s)
