"""What every TTS engine and deployment shares: sentence streaming, voices, cancel.

A backend only turns one sentence into float32 audio at its own rate
(``SpeechBackend.synthesize``). ``TTSEngine.stream`` splits the text, resamples
to the rate asked for and yields int16 per sentence, so the first sentence is
heard while the rest is still being synthesized. ``TTSReplica`` exposes that
as a Serve streaming method (``handle.options(stream=True).stream.remote``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Iterator, Protocol

import numpy as np

from deployments import audio
from deployments.declaration import Availability
from deployments.results import EngineInfo
from deployments.runtime import ModelReplica
from deployments.text import SynthesisCancelled, tts_sentences



class SpeechBackend(Protocol):
    model_id: str
    device: str
    sample_rate: int
    default_voice: str

    def voices(self) -> list[str]: ...

    def synthesize(self, text: str, voice: str, speed: float, job: "Job") -> np.ndarray:
        """One sentence as mono float32 at ``sample_rate``; may call ``job.check()`` while it works."""


class Job:
    """One ``stream()`` call as a backend sees it: engine-specific style knobs and a cancel check."""

    def __init__(self, engine: "TTSEngine", style: dict | None = None):
        self.engine = engine
        self.epoch = engine.epoch
        self.style = style or {}
        """Knobs only some engines have (Chatterbox: exaggeration, cfg_weight, temperature)."""

    def check(self) -> None:
        """Raise SynthesisCancelled if the engine was cancelled after this job began."""
        if self.engine.epoch != self.epoch:
            raise SynthesisCancelled("synthesis cancelled")


class TTSEngine:
    """Base of the TTS engines: subclasses say what is available and build the backend."""

    def __init__(self) -> None:
        self.backend: SpeechBackend | None = None
        self.epoch = 0  # bumped by cancel(); running syntheses compare against it
        self._epoch_lock = threading.Lock()

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
        if not len(b.synthesize("Ok.", b.default_voice, 1.0, Job(self))):
            raise RuntimeError(f"{b.model_id} returned no audio")

    def voices(self) -> list[str]:
        return self._loaded().voices()

    @property
    def sample_rate(self) -> int:
        return self._loaded().sample_rate

    def cancel(self) -> None:
        """Stop every synthesis running now (later ones are not affected)."""
        with self._epoch_lock:
            self.epoch += 1

    def stream(
        self, text: str, voice: str | None = None, speed: float = 1.0,
        sample_rate: int | None = None, style: dict | None = None,
    ) -> Iterator[np.ndarray]:
        """int16 mono chunks, one per sentence, at ``sample_rate`` (the model's own by default).

        Raises ValueError for an unknown voice or rate, SynthesisCancelled on cancel().
        """
        b = self._loaded()
        voice = voice or b.default_voice
        if voice not in b.voices():
            raise ValueError(f"unknown voice {voice!r}; available: {b.voices()}")
        rate = audio.check_rate(sample_rate or b.sample_rate)
        job = Job(self, style)
        for sentence in tts_sentences(text):
            job.check()
            samples = b.synthesize(sentence, voice, speed, job)
            yield audio.to_int16(audio.resample(samples, b.sample_rate, rate))

    def _loaded(self) -> SpeechBackend:
        if self.backend is None:
            raise RuntimeError(f"{type(self).__name__}.load() has not been called")
        return self.backend


class TTSReplica(ModelReplica):
    """Base of the TTS deployments: streams an engine's sentences as int16 bytes."""

    engine: TTSEngine

    async def stream(
        self, text: str, voice: str | None = None, speed: float = 1.0,
        sample_rate: int | None = None, style: dict | None = None, fmt: str = "pcm",
    ):
        """Async generator of the response bytes in ``fmt``, one piece per sentence for pcm/wav.

        Bad input (voice, rate) raises before anything is yielded, so a caller
        that awaits the first item can still answer 4xx. For pcm/wav there is
        exactly one item per sentence of ``tts_sentences(text)`` (the first one
        with the wav header), so a caller can resume a broken stream from the
        next sentence; compressed formats arrive whole at the end. Sentences are
        synthesized in a thread, so cancel() is served meanwhile.
        """
        rate = sample_rate or self.engine.sample_rate
        encoder = audio.StreamEncoder(fmt, rate)
        chunks = self.engine.stream(text, voice, speed, rate, style)
        head = encoder.start()
        streamable = fmt in audio.StreamEncoder.STREAMABLE
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            piece = head + encoder.add(chunk)
            if piece or streamable:
                yield piece
                head = b""
        if tail := head + encoder.finish():
            yield tail

    def voices(self) -> list[str]:
        return self.engine.voices()

    def cancel(self) -> None:
        self.engine.cancel()
