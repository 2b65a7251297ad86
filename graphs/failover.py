"""TTS streams that survive a dead or stalled replica, sentence by sentence.

Serve retries a request only when its replica died before accepting it; once
accepted, a node's death fails it. So the gateway streams TTS itself with a
deadline per sentence and, when the replica dies or stalls, opens the stream
again for the sentences not yet sent, steering PreferredHostRouter away from
the node that failed. Synthesis is a pure function of the text, so the resumed
stream continues the audio without a gap or a repeat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments import routing
from deployments.text import tts_sentences
from graphs.http import APIError

log = logging.getLogger("ray.serve")

REPLICA_LOST = (ActorDiedError, ActorUnavailableError, RayActorError, ReplicaUnavailableError)
STREAMABLE = ("pcm", "wav")  # one piece per sentence (deployments.tts.TTSReplica.stream)


class TTSStream:
    """One TTS response from a deployment's ``stream`` method, resumable by sentence.

    ``await first()`` opens it and returns the first piece (so bad input is
    still a 4xx); iterate ``rest()`` for the others. ``host`` is the node whose
    replica spoke first.
    """

    def __init__(self, handle: DeploymentHandle, text: str, fmt: str, piece_timeout_s: float,
                 suspect_s: float = 3.0, attempts: int = 3, **kwargs):
        self.handle, self.text, self.fmt, self.kwargs = handle, text, fmt, kwargs
        self.piece_timeout_s, self.suspect_s, self.attempts = piece_timeout_s, suspect_s, attempts
        self.sentences = tts_sentences(text)
        self.sent = 0  # sentences delivered (pcm/wav)
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
        for attempt in range(1, self.attempts + 1):
            stream = self._open(fmt)
            try:
                while True:
                    if fmt in STREAMABLE and self.sent == len(self.sentences):
                        stream.cancel()  # every sentence is out: no need to wait for the end marker
                        return
                    piece = await asyncio.wait_for(stream.__anext__(), self.piece_timeout_s)
                    if self.host is None:
                        self.host = routing.served_by(self.request_id)
                    if fmt in STREAMABLE:
                        self.sent += 1
                    if piece:
                        yield piece
            except StopAsyncIteration:
                return
            except (asyncio.TimeoutError, *REPLICA_LOST) as exc:
                stream.cancel()
                failed = routing.served_by(self.request_id)
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
                if fmt == "wav" and self.sent:
                    fmt = "pcm"  # the header went out with the first sentence
