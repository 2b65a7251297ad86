"""The voice graph: one utterance in, the spoken answer streamed out, with barge-in.

STT -> (retrieval context) -> streaming LLM -> sentences -> TTS per sentence.
Each sentence is synthesized as soon as the LLM has finished it, so the first
words play while the LLM is still writing the rest. A turn yields frames
(dicts) that the HTTP route writes as NDJSON; ``cancel(turn_id)`` stops the
LLM stream and the pending synthesis and reports how much audio was sent.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import AsyncIterator

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.declaration import GraphDeclaration
from deployments.llm import CHAT_LLM, ChatRequest, LLMError
from deployments.profile import current_placement
from deployments.results import ReplicaInfo
from deployments.registry import BY_NAME
from deployments.stt import WHISPER
from deployments.settings import ConversationSettings, LLMSettings, SpeechSettings
from deployments.text import CancelKey, split_sentences, tts_sentences
from graphs import routing
from graphs.failover import TTSCalls
from graphs.http import root_cause, scrub
from graphs.metrics import record_stage, stage_timer
from graphs.retrieval import RETRIEVAL, with_context

log = logging.getLogger("ray.serve")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant on a phone call. Answer in a few short, "
    "plain sentences without lists or markup."
)


def since(start: float) -> float:
    """Milliseconds since ``start`` (a perf_counter reading)."""
    return (time.perf_counter() - start) * 1e3


class SentenceBuffer:
    """Turns a stream of text pieces into whole sentences, as early as each is complete."""

    def __init__(self) -> None:
        self.text = ""

    def feed(self, piece: str) -> list[str]:
        self.text += piece
        parts = split_sentences(self.text)
        if len(parts) < 2:
            return []
        # The last part may still grow; keep it (and what follows it) buffered.
        tail = parts[-1]
        self.text = self.text[self.text.rindex(tail):]
        return parts[:-1]

    def flush(self) -> list[str]:
        parts, self.text = split_sentences(self.text), ""
        return parts


class Conversations:
    """The recent exchanges of each conversation, bounded three ways.

    At most ``max_exchanges`` question-answer pairs per conversation, at most
    ``max_conversations`` conversations (the least recently used goes first),
    and none silent for longer than ``ttl_s``. Kept in the VoiceGraph replica's
    memory: a restart forgets them, as a phone call would.
    """

    def __init__(self, bounds: ConversationSettings, clock=time.monotonic):
        self.bounds, self.clock = bounds, clock
        self.recent: OrderedDict[str, tuple[float, deque]] = OrderedDict()

    def history(self, conversation_id: str | None) -> list[dict]:
        """The kept messages of ``conversation_id``, oldest first ([] for none or a new one)."""
        self._expire()
        if conversation_id is None or conversation_id not in self.recent:
            return []
        return [m for exchange in self.recent[conversation_id][1] for m in exchange]

    def add(self, conversation_id: str | None, question: str, answer: str) -> None:
        if conversation_id is None or not question.strip() or not answer.strip():
            return
        _, exchanges = self.recent.pop(
            conversation_id, (0.0, deque(maxlen=self.bounds.max_exchanges)))
        exchanges.append(({"role": "user", "content": question},
                          {"role": "assistant", "content": answer}))
        self.recent[conversation_id] = (self.clock(), exchanges)
        while len(self.recent) > self.bounds.max_conversations:
            self.recent.popitem(last=False)

    def _expire(self) -> None:
        oldest_kept = self.clock() - self.bounds.ttl_s
        while self.recent and next(iter(self.recent.values()))[0] < oldest_kept:
            self.recent.popitem(last=False)


@dataclass
class Turn:
    turn_id: str
    sample_rate: int
    samples_sent: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    key: CancelKey = field(default_factory=lambda: CancelKey.new("voice"))
    """Carried by every sentence of this turn: its cancel stops these and no other caller's."""


class TurnRefused(LookupError):
    """The turn cannot run at all (no LLM, no such TTS engine): a 503 before any work."""


@serve.deployment(max_ongoing_requests=32)
class VoiceGraph:
    """Handles come from build_app: STT is required; the LLM, TTS engines and retrieval are optional."""

    def __init__(
        self,
        llm_settings: LLMSettings,
        speech: SpeechSettings,
        stt: DeploymentHandle,
        llm: DeploymentHandle | None = None,
        llm_unavailable: str = "",
        tts: dict[str, DeploymentHandle] | None = None,
        tts_unavailable: dict[str, str] | None = None,
        retrieval: DeploymentHandle | None = None,
        retrieval_unavailable: str = "",
    ):
        self.stt, self.retrieval, self.speech = stt, retrieval, speech
        self.tts = dict(tts or {})
        """Running TTS deployments by their public name (kokoro, piper, chatterbox)."""
        self.tts_unavailable = dict(tts_unavailable or {})
        # This process's own TTS traffic (routing state, hedging); turns are never shed.
        self.tts_calls = TTSCalls(speech, routing.process_state())
        self.llm, self.llm_unavailable, self.llm_settings = llm, llm_unavailable, llm_settings
        self.conversations = Conversations(llm_settings.conversation)
        self.turns: dict[str, Turn] = {}
        self.placement = current_placement()

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(model="voice", backend="VoiceGraph", device="cpu",
                           llm=CHAT_LLM.name if self.llm is not None else None,
                           tts=sorted(self.tts), **self.placement.to_dict())

    def check(self, engine: str) -> None:
        """Refuse a turn that cannot run before any work is done."""
        if self.llm is None:
            raise TurnRefused(f"ChatLLM is not running: {self.llm_unavailable or 'not deployed'}")
        if engine not in self.tts:
            raise TurnRefused(f"TTS engine {engine!r} is not running: "
                              f"{self.tts_unavailable.get(engine) or 'not deployed'}")

    async def turn(
        self, turn_id: str, audio: bytes, pcm_rate: int | None, options: dict
    ) -> AsyncIterator[dict]:
        """Frames of one turn; errors before the first frame are the caller's 4xx/503."""
        engine = options.get("engine") or BY_NAME[self.speech.default_engine].public_name
        self.check(engine)
        turn = Turn(turn_id, int(options.get("output_sample_rate") or 24_000))
        timings: dict[str, float] = {}
        started = time.perf_counter()
        with stage_timer("voice", "stt", timings):
            heard = await self.stt.transcribe.remote(audio, pcm_rate, options.get("language"))
        self.turns[turn_id] = turn
        try:
            yield {"type": "transcript", "turn_id": turn_id, "text": heard.text,
                   "language": heard.language}
            context = []
            if options.get("retrieve") and self.retrieval is not None and heard.text.strip():
                with stage_timer("voice", "retrieval", timings):
                    found = await self.retrieval.retrieve.remote(
                        heard.text, int(options.get("k") or 3), 1, None)
                context = [hit.text for hit in found.results]
                yield {"type": "context", "results": context}
            if not heard.text.strip():  # silence or noise (VAD heard no speech): nothing to answer
                yield self._done(turn, "", timings, started)
                return
            async for frame in self._answer(turn, heard.text, context, engine, options,
                                            timings, started):
                yield frame
        finally:
            self.turns.pop(turn_id, None)

    async def _answer(self, turn: Turn, text: str, context: list[str], engine: str,
                      options: dict, timings: dict, started: float) -> AsyncIterator[dict]:
        system = with_context(options.get("system_prompt") or DEFAULT_SYSTEM_PROMPT, context)
        conversation = options.get("conversation_id")
        messages = [{"role": "system", "content": system},
                    *self.conversations.history(conversation), {"role": "user", "content": text}]
        request = ChatRequest(messages, options.get("max_tokens") or self.llm_settings.max_tokens,
                              self.llm_settings.temperature)
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        reply: list[str] = []
        spoken: list[str] = []

        async def speak(sentence: str) -> bytes:
            stream = self.tts_calls.stream(
                self.tts[engine], tts_sentences(sentence), turn.key, voice=options.get("voice"),
                speed=float(options.get("speed") or 1.0), sample_rate=turn.sample_rate)
            return b"".join([piece.pcm async for piece in stream.pieces()])

        async def said(sentence: str) -> None:
            if "llm_first_sentence" not in timings:
                record_stage("voice", "llm_first_sentence", since(started), timings)
            await sentences.put(sentence)

        async def produce() -> None:
            buffer = SentenceBuffer()
            chunks = self.llm.options(stream=True).chat.remote(request)
            finished = False
            try:
                async for chunk in chunks:
                    if not chunk.text:
                        continue
                    if "llm_first_token" not in timings:
                        record_stage("voice", "llm_first_token", since(started), timings)
                    reply.append(chunk.text)
                    for sentence in buffer.feed(chunk.text):
                        await said(sentence)
                for sentence in buffer.flush():
                    await said(sentence)
                record_stage("voice", "llm_done", since(started), timings)
                finished = True
            finally:
                if not finished:  # barge-in or a failed TTS: stop generating the rest
                    chunks.cancel()
                await sentences.put(None)

        producer = asyncio.create_task(produce())
        cancel_wait = asyncio.create_task(turn.cancelled.wait())
        error: dict | None = None
        index = 0
        try:
            while True:
                next_sentence = asyncio.create_task(sentences.get())
                await asyncio.wait({next_sentence, cancel_wait}, return_when=asyncio.FIRST_COMPLETED)
                if turn.cancelled.is_set():
                    next_sentence.cancel()
                    break
                sentence = next_sentence.result()
                if sentence is None:
                    break
                synth = asyncio.create_task(speak(sentence))
                await asyncio.wait({synth, cancel_wait}, return_when=asyncio.FIRST_COMPLETED)
                if turn.cancelled.is_set():
                    synth.cancel()
                    break
                pcm: bytes = synth.result()
                if index == 0:
                    record_stage("voice", "first_audio", since(started), timings)
                turn.samples_sent += len(pcm) // 2
                spoken.append(sentence)
                yield {"type": "audio", "index": index, "text": sentence,
                       "sample_rate": turn.sample_rate, "samples": len(pcm) // 2,
                       "audio": base64.b64encode(pcm).decode()}
                index += 1
            if producer.done() and producer.exception() is not None:
                raise producer.exception()
        except LLMError as exc:  # Ray's wrapper passes the replica's kind and message through
            error = {"type": "error", "stage": "llm", "kind": exc.kind, "message": scrub(exc.message)}
        except Exception as exc:  # a TTS failure after failover: reported, never a hang
            log.warning("voice turn %s failed: %s", turn.turn_id, exc)
            error = {"type": "error", "stage": "tts", "message": scrub(str(root_cause(exc)))}
        finally:
            producer.cancel()
            cancel_wait.cancel()
        if error:
            yield error
        self.conversations.add(conversation, text, " ".join(spoken))  # what the user heard
        yield self._done(turn, "".join(reply).strip(), timings, started)

    @staticmethod
    def _done(turn: Turn, reply: str, timings: dict, started: float) -> dict:
        """The turn's last frame."""
        record_stage("voice", "total", since(started), timings)
        return {"type": "done", "turn_id": turn.turn_id, "reply": reply,
                "cancelled": turn.cancelled.is_set(), "samples_sent": turn.samples_sent,
                "sample_rate": turn.sample_rate, "timings_ms": timings}

    async def cancel(self, turn_id: str) -> dict | None:
        """Barge-in: stop this replica's turn ``turn_id``; None when it is not here."""
        turn = self.turns.get(turn_id)
        if turn is None:
            return None
        turn.cancelled.set()
        # Stop this turn's sentence being synthesized right now, inside the engine's loop.
        await asyncio.gather(
            *(h.broadcast("cancel", turn.key).results_async(timeout_s=2) for h in self.tts.values()),
            return_exceptions=True,
        )
        return {"turn_id": turn_id, "cancelled": True, "samples_sent": turn.samples_sent,
                "sample_rate": turn.sample_rate}


VOICE = GraphDeclaration(
    name="VoiceGraph", task="voice", deployment=VoiceGraph,
    bind_args=lambda s: (s.llm, s.speech), uses={"stt": WHISPER.name},
    optional={"retrieval": RETRIEVAL.name, "llm": CHAT_LLM.name}, by_task={"tts": "tts"},
)
