"""GPU backends' code paths on CPU with random weights: code-path tests, no quality claim.

Needs the extras ``whisper-gpu`` (openai-whisper; install it with --no-deps
plus tiktoken, more-itertools, numba to skip triton) and ``kokoro-gpu``
(kokoro 0.9.4 and misaki; no spaCy model is needed). Skipped without them.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.codepath import random_kmodel, random_whisper
from deployments import audio
from deployments.kokoro import KModelBackend
from deployments.declaration import Availability
from deployments.stt import OpenAIWhisperBackend, SpeechDetector, WhisperEngine
from deployments.text import tts_sentences
from deployments.settings import WhisperSettings
from deployments.tts import TTSEngine
from tests.speechkit import espeak_wav

pytestmark = pytest.mark.codepath
torch = pytest.importorskip("torch")


def whisper_model():
    pytest.importorskip("whisper", reason="openai-whisper not installed (extra whisper-gpu)")
    return random_whisper()


def test_openai_whisper_backend_code_path():
    """Through the engine, as a GPU node runs it: VAD, then the backend on the speech only."""
    backend = OpenAIWhisperBackend(whisper_model(), "random-tiny", "cpu", sample_len=8)
    engine = WhisperEngine(WhisperSettings(), "cpu")
    engine.backend, engine.detector = backend, SpeechDetector(engine.settings)
    speech = audio.decode(espeak_wav("Testing the GPU code path.", 8_000))
    lead = np.zeros(5 * speech.rate, np.float32)
    clip = audio.Audio(np.concatenate([lead, speech.samples]), speech.rate)
    result = engine.transcribe(clip, language="en", words=False)
    assert result.language == "en" and isinstance(result.text, str)
    assert result.segments and all(s.end >= s.start >= 4.5 for s in result.segments)  # mapped back
    silent = engine.transcribe(audio.Audio(lead, speech.rate), language="en")
    assert (silent.text, silent.segments) == ("", [])


class KModelEngine(TTSEngine):
    """TTSEngine around a prepared KModelBackend (the GPU backend, here on CPU)."""

    def __init__(self, backend):
        super().__init__()
        self._backend = backend

    def availability(self):
        return Availability(True)

    def build_backend(self):
        return self._backend


def test_kmodel_backend_code_path(tmp_path):
    pytest.importorskip("kokoro", reason="kokoro not installed (extra kokoro-gpu)")
    model = random_kmodel(tmp_path)
    # The Blackwell workaround: a real-valued STFT instead of torch.stft's complex one.
    assert type(model.decoder.generator.stft).__name__ == "CustomSTFT"
    packs = {"af_test": torch.randn(510, 1, 256) * 0.1}
    backend = KModelBackend(model, packs, "af_test", "random-kokoro")
    engine = KModelEngine(backend)
    engine.load()
    chunks = [engine.synthesize(s, sample_rate=16_000)
              for s in tts_sentences("Two sentences here. And the second one.")]
    assert len(chunks) == 2
    assert all(c.dtype == np.dtype("<i2") and 0 < len(c) < 16_000 * 20 for c in chunks)
    assert engine.info().voices == ["af_test"]


def test_every_declared_model_has_a_gpu_smoke_code_path_or_says_why_not():
    from bench.codepath import CODE_PATHS, NOT_SMOKED
    from deployments.registry import MODELS

    assert {m.name for m in MODELS} == {*CODE_PATHS, *NOT_SMOKED}


def test_the_gpu_smoke_finds_the_models_the_registry_finds():
    """Both find declarations without a hand-written list; the smoke only reads the source."""
    import importlib

    from bench.gpu_smoke import declared_models
    from deployments.registry import MODELS

    found = [getattr(importlib.import_module(module), name).name
             for module, name in declared_models()]
    assert found == [m.name for m in MODELS] and "ChatLLM" in found


def test_gpu_smoke_runs_every_code_path_without_ray_one_line_per_model():
    """The GPU machine has no Ray: the smoke must import none (here Ray is made unimportable).
    Every code path runs on CPU, so one broken by a change elsewhere fails here, not there."""
    import subprocess
    import sys

    from bench.codepath import CODE_PATHS, NOT_SMOKED
    from tests.conftest import REPO

    script = ("import sys; sys.modules['ray'] = None; "
              "sys.argv = ['gpu_smoke', '--device', 'cpu']; "
              "import runpy; runpy.run_path('bench/gpu_smoke.py', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    status = {l.split()[0]: l.split()[1] for l in lines if l.strip()}
    assert status == {**{n: "ok" for n in CODE_PATHS}, **{n: "skip" for n in NOT_SMOKED}}
    assert any(l.startswith("VectorIndex") and "ExactBackend" in l for l in lines)
