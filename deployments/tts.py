"""What every TTS engine and deployment shares: one sentence per call, voices, keyed cancel.

A backend only turns one sentence into float32 audio at its own rate
(``SpeechBackend.synthesize``). ``TTSEngine.synthesize`` checks the voice and
rate, resamples and returns int16. ``TTSReplica.synthesize`` is one Serve call
for one given sentence and answers a ``SpeechPiece`` with its index: the gateway
splits the text (``deployments.text.tts_sentences``), asks for the sentences in
order, a sentence or more ahead, and on a failure asks again for exactly the
ones it has not delivered (graphs.failover). No replica ever splits text.

Cancel is keyed (``CancelKey``): every sentence of one turn or request carries
the same key, and ``cancel(key)`` stops only those.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from typing import Protocol

import numpy as np

from deployments import audio
from deployments.declaration import Availability
from deployments.results import EngineInfo, SpeechPiece
from deployments.runtime import ModelReplica
from deployments.text import TTS_SENTENCE_CHARS, CancelKey, SynthesisCancelled



class SpeechBackend(Protocol):
    model_id: str
    device: str
    sample_rate: int
    default_voice: str

    def voices(self) -> list[str]: ...

    def synthesize(self, text: str, voice: str, speed: float, job: "Job") -> np.ndarray:
        """One sentence as mono float32 at ``sample_rate``; may call ``job.check()`` while it works."""


class CancelBook:
    """The keys this engine has synthesized for and the keys cancelled, both bounded.

    A key stays cancelled (a sentence of that turn asked later is refused at
    once), and cancelling a whole scope cancels every key of it seen lately,
    so a request between two sentences is stopped too. Keys are unique per
    turn or request, so remembering old ones costs nothing but the table.
    """

    SIZE = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[CancelKey, None] = OrderedDict()
        self._cancelled: OrderedDict[CancelKey, None] = OrderedDict()

    @classmethod
    def _remember(cls, table: OrderedDict, key: CancelKey) -> None:
        table[key] = None
        table.move_to_end(key)
        while len(table) > cls.SIZE:
            table.popitem(last=False)

    def started(self, key: CancelKey) -> None:
        with self._lock:
            self._remember(self._seen, key)

    def cancel(self, key: CancelKey) -> int:
        """Cancel ``key`` (``key.id`` None: every key of its scope seen); how many keys."""
        with self._lock:
            keys = [key] if key.id is not None else [k for k in self._seen if k.scope == key.scope]
            for k in keys:
                self._remember(self._cancelled, k)
            return len(keys)

    def is_cancelled(self, key: CancelKey) -> bool:
        return key in self._cancelled


class Job:
    """One sentence's synthesis as a backend sees it: engine-specific style knobs and a cancel check."""

    def __init__(self, book: CancelBook, key: CancelKey, style: dict | None = None):
        self.book, self.key = book, key
        self.style = style or {}
        """Knobs only some engines have (Chatterbox: exaggeration, cfg_weight, temperature)."""

    def check(self) -> None:
        """Raise SynthesisCancelled if this job's key was cancelled."""
        if self.book.is_cancelled(self.key):
            raise SynthesisCancelled("synthesis cancelled")


class TTSEngine:
    """Base of the TTS engines: subclasses say what is available and build the backend."""

    def __init__(self) -> None:
        self.backend: SpeechBackend | None = None
        self.cancels = CancelBook()

    def availability(self) -> Availability:
        raise NotImplementedError

    def build_backend(self) -> SpeechBackend:
        raise NotImplementedError

    def load(self) -> None:
        avail = self.availability()
        if not avail.ok:
            raise RuntimeError(avail.reason)
        self.backend = self.build_backend()

    def info(self) -> EngineInfo:
        b = self._loaded()
        return EngineInfo(model=b.model_id, backend=type(b).__name__, device=b.device,
                          sample_rate=b.sample_rate, voices=b.voices(),
                          default_voice=b.default_voice)

    def probe(self) -> None:
        """One short sentence in the default voice."""
        b = self._loaded()
        job = Job(self.cancels, CancelKey.new("probe"))
        if not len(b.synthesize("Ok.", b.default_voice, 1.0, job)):
            raise RuntimeError(f"{b.model_id} returned no audio")

    def voices(self) -> list[str]:
        return self._loaded().voices()

    @property
    def sample_rate(self) -> int:
        return self._loaded().sample_rate

    @property
    def device(self) -> str:
        return self._loaded().device

    def cancel(self, key: CancelKey) -> int:
        """Stop the syntheses of ``key`` (running now or asked later); see CancelBook."""
        return self.cancels.cancel(key)

    def synthesize(
        self, sentence: str, voice: str | None = None, speed: float = 1.0,
        sample_rate: int | None = None, style: dict | None = None, key: CancelKey | None = None,
    ) -> np.ndarray:
        """One sentence as int16 mono at ``sample_rate`` (the model's own by default).

        Raises ValueError for an unknown voice or rate or a text longer than one
        sentence may be, SynthesisCancelled once ``key`` is cancelled.
        """
        b = self._loaded()
        voice = voice or b.default_voice
        if voice not in b.voices():
            raise ValueError(f"unknown voice {voice!r}; available: {b.voices()}")
        rate = audio.check_rate(sample_rate or b.sample_rate)
        if len(sentence) > TTS_SENTENCE_CHARS:
            raise ValueError(f"one sentence is at most {TTS_SENTENCE_CHARS} characters; "
                             "split the text with deployments.text.tts_sentences")
        job = Job(self.cancels, key or CancelKey.new("engine"), style)
        self.cancels.started(job.key)
        job.check()
        samples = b.synthesize(sentence, voice, speed, job)
        return audio.to_int16(audio.resample(samples, b.sample_rate, rate))

    def _loaded(self) -> SpeechBackend:
        if self.backend is None:
            raise RuntimeError(f"{type(self).__name__}.load() has not been called")
        return self.backend


class TTSReplica(ModelReplica):
    """Base of the TTS deployments: one sentence per call, in a thread so cancel() is served meanwhile."""

    engine: TTSEngine
    _firsts: set[asyncio.Event] | None = None

    @contextlib.asynccontextmanager
    async def turn(self, index: int):
        """On CPU a text's first sentence computes without its later ones: those wait for the
        first sentences already computing when they arrive (not for ones that come later,
        so they never starve), then run as they come. Each synthesis uses the replica's
        whole thread budget (its ``num_cpus``), and a sentence asked ahead slowed the first
        one, which the caller is waiting for, by sharing those cores. Callers' first
        sentences still run side by side. On a GPU every call runs as it comes."""
        if self.engine.device != "cpu":
            yield
            return
        if self._firsts is None:
            self._firsts = set()
        if index > 0:
            await asyncio.gather(*(done.wait() for done in list(self._firsts)))
            yield
            return
        done = asyncio.Event()
        self._firsts.add(done)
        try:
            yield
        finally:
            self._firsts.discard(done)
            done.set()

    async def synthesize(
        self, index: int, sentence: str, voice: str | None = None, speed: float = 1.0,
        sample_rate: int | None = None, style: dict | None = None, key: CancelKey | None = None,
    ) -> SpeechPiece:
        """Sentence ``index`` of the caller's text as a SpeechPiece (ValueError on bad input)."""
        rate = sample_rate or self.engine.sample_rate
        async with self.turn(index):
            pcm = await asyncio.to_thread(
                self.engine.synthesize, sentence, voice, speed, rate, style, key)
        return SpeechPiece(index, pcm.tobytes(), rate, self.placement.host)

    def voices(self) -> list[str]:
        return self.engine.voices()

    def cancel(self, key: CancelKey) -> int:
        return self.engine.cancel(key)
