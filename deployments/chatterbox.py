"""Chatterbox voice cloning (GPU only), the phone daemon's voice.

chatterbox-tts pins its own torch, so the deployment runs in its own Ray
``runtime_env`` (serve_config.yaml) and every chatterbox/torch import here is
lazy: this module imports in the main environment, where the patches below are
unit-tested on CPU. Weights come only from the local model cache.

Blackwell (sm_121) cannot JIT complex elementwise kernels, so two patches are
applied before the model loads: the S3 tokenizer's power spectrum is computed
as real² + imag² on a real view, and the x-vector fbank runs on the CPU.
One synthesis runs at a time per GPU; ``cancel()`` reaches the token loop.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

import numpy as np
from ray import serve

from deployments.declaration import AVAILABLE, Availability, ModelDeclaration, Weights
from deployments.profile import resolve_profile
from deployments.settings import DEFAULT_MODEL_CACHE, ChatterboxSettings
from deployments.tts import Job, TTSEngine, TTSReplica

CHATTERBOX_RATE = 24_000
REFERENCE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
S3_HOP = 160  # chatterbox.models.s3tokenizer.S3_HOP (10 ms at 16 kHz)


# --- Blackwell patches: small pure-torch functions -------------------------

def power_spectrum(stft):
    """|X|² of a complex STFT without a complex elementwise kernel (real² + imag²)."""
    import torch

    ri = torch.view_as_real(stft)
    return ri[..., 0] ** 2 + ri[..., 1] ** 2


def s3_log_mel_spectrogram(self, audio, padding: int = 0):
    """S3Tokenizer.log_mel_spectrogram with ``power_spectrum`` for ``stft.abs()**2``.

    Otherwise the same as chatterbox-tts 0.1.7's (whisper-style log-mel, 128 bins).
    """
    import torch
    import torch.nn.functional as F

    if not torch.is_tensor(audio):
        audio = torch.from_numpy(audio)
    audio = audio.to(self.device)
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    stft = torch.stft(audio, self.n_fft, S3_HOP, window=self.window.to(self.device), return_complex=True)
    magnitudes = power_spectrum(stft[..., :-1])
    mel_spec = self._mel_filters.to(self.device) @ magnitudes
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def on_cpu(fn):
    """Run ``fn`` on CPU copies of its tensor arguments; tensors it returns go back to the input's device."""
    import torch

    def to(x, device):
        if torch.is_tensor(x):
            return x.to(device)
        if isinstance(x, (list, tuple)):
            return type(x)(to(v, device) for v in x)
        return x

    def first_device(args):
        for a in args:
            if torch.is_tensor(a):
                return a.device
            if isinstance(a, (list, tuple)) and (d := first_device(a)) is not None:
                return d
        return None

    @functools.wraps(fn)
    def wrapper(*args):
        device = first_device(args) or torch.device("cpu")
        return to(fn(*to(args, "cpu")), device)

    return wrapper


def apply_blackwell_patches() -> None:
    """Patch chatterbox's modules in place (idempotent)."""
    from chatterbox.models.s3gen import xvector
    from chatterbox.models.s3tokenizer import s3tokenizer

    s3tokenizer.S3Tokenizer.log_mel_spectrogram = s3_log_mel_spectrogram
    if not getattr(xvector.extract_feature, "__wrapped__", None):
        xvector.extract_feature = on_cpu(xvector.extract_feature)


# --- voice references --------------------------------------------------------

class VoiceReferences:
    """Reference clips a client may name: only files listed in ``metadata.json``.

    metadata.json maps file names to descriptions, e.g.
    ``{"samantha_evolving.wav": {"description": "..."}}``. A name is a bare
    file name from that list; no path, absolute or relative, is ever resolved.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder).expanduser().resolve()

    def allowed(self) -> dict[str, Path]:
        meta = self.folder / "metadata.json"
        if not meta.is_file():
            return {}
        listed = json.loads(meta.read_text(encoding="utf-8"))
        out = {}
        for name in listed:
            path = (self.folder / name).resolve()
            if (path.parent == self.folder and path.suffix.lower() in REFERENCE_SUFFIXES
                    and path.is_file()):
                out[name] = path
        return out

    def resolve(self, name: str) -> Path:
        allowed = self.allowed()
        if name not in allowed:
            raise ValueError(f"reference_audio {name!r} is not in the allowlist; available: {sorted(allowed)}")
        return allowed[name]


# --- engine ------------------------------------------------------------------

class ChatterboxBackend:
    """chatterbox-tts ChatterboxTTS on CUDA, one synthesis at a time."""

    sample_rate = CHATTERBOX_RATE

    def __init__(self, model, references: VoiceReferences, settings: ChatterboxSettings, model_id: str):
        self.model = model
        self.references = references
        self.settings = settings
        self.model_id = model_id
        self.device = str(model.device)
        self.default_voice = settings.default_reference
        self.lock = threading.Lock()
        self._job: Job | None = None
        # Called once per sampled speech token: the cancel flag is seen inside the loop.
        model.t3.speech_emb.register_forward_pre_hook(self._on_token)

    @classmethod
    def load(cls, repo_dir: Path, references: VoiceReferences, settings: ChatterboxSettings,
             model_id: str) -> "ChatterboxBackend":
        from chatterbox.tts import ChatterboxTTS

        apply_blackwell_patches()
        return cls(ChatterboxTTS.from_local(repo_dir, "cuda"), references, settings, model_id)

    def _on_token(self, module, inputs) -> None:
        if self._job is not None:
            self._job.check()

    def voices(self) -> list[str]:
        return sorted(self.references.allowed())

    def synthesize(self, text: str, voice: str, speed: float, job: Job) -> np.ndarray:
        if speed != 1.0:
            raise ValueError("chatterbox speaks at speed 1.0 only")
        s = {"exaggeration": self.settings.exaggeration, "cfg_weight": self.settings.cfg_weight,
             "temperature": self.settings.temperature, **job.style}
        with self.lock:
            self._job = job
            try:
                wav = self.model.generate(text, audio_prompt_path=str(self.references.resolve(voice)), **s)
            finally:
                self._job = None
        return wav.squeeze(0).float().cpu().numpy()


class ChatterboxEngine(TTSEngine):
    def __init__(self, settings: ChatterboxSettings, profile: str = "auto", cache: Path | None = None):
        super().__init__()
        self.settings = settings
        self.profile = resolve_profile(profile)
        self.cache = Path(cache or DEFAULT_MODEL_CACHE).expanduser()
        self.references = VoiceReferences(settings.voice_dir)

    def availability(self) -> Availability:
        weights = chatterbox_weights(self.settings).check(self.cache)
        if not weights.ok:
            return weights
        if self.profile == "cpu":
            return Availability(False, "Chatterbox runs on GPU nodes only")
        return AVAILABLE

    @property
    def weights_path(self) -> Path:
        """The folder ``ChatterboxTTS.from_local`` loads."""
        return chatterbox_weights(self.settings).path(self.cache)

    def build_backend(self) -> ChatterboxBackend:
        return ChatterboxBackend.load(self.weights_path, self.references, self.settings, self.settings.repo)


def chatterbox_weights(settings: ChatterboxSettings) -> Weights:
    """What ``ChatterboxTTS.from_local`` reads (chatterbox-tts 0.1.7)."""
    return Weights(settings.repo, files=("ve.safetensors", "t3_cfg.safetensors",
                                         "s3gen.safetensors", "tokenizer.json"))


@serve.deployment(max_ongoing_requests=16)
class ChatterboxTTS(TTSReplica):
    """Serves one ChatterboxEngine; max_ongoing_requests > 1 so /cancel is never queued behind a synthesis."""


CHATTERBOX = ModelDeclaration(
    name="ChatterboxTTS", task="tts", deployment=ChatterboxTTS,
    section=lambda s: s.speech.chatterbox,
    engine=lambda s, profile: ChatterboxEngine(s.speech.chatterbox, profile, s.model_cache),
    weights=lambda s: (chatterbox_weights(s.speech.chatterbox),),
    public_name="chatterbox",
)
