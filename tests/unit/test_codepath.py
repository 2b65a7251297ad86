"""GPU backends' code paths on CPU with random weights: code-path tests, no quality claim.

Needs the extras ``whisper-gpu`` (openai-whisper; install it with --no-deps
plus tiktoken, more-itertools, numba to skip triton) and ``kokoro-gpu``
(kokoro 0.9.4 and misaki; no spaCy model is needed). Skipped without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deployments import audio
from deployments.kokoro import KModelBackend
from deployments.declaration import Availability
from deployments.stt import OpenAIWhisperBackend, WhisperEngine
from deployments.settings import WhisperSettings
from deployments.tts import TTSEngine
from tests.speechkit import espeak_wav

pytestmark = pytest.mark.codepath
torch = pytest.importorskip("torch")


def random_whisper():
    pytest.importorskip("whisper", reason="openai-whisper not installed (extra whisper-gpu)")
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2,
                           n_audio_layer=1, n_vocab=51865, n_text_ctx=448, n_text_state=64,
                           n_text_head=2, n_text_layer=1)
    model = Whisper(dims).eval()
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)  # created with torch.empty
    return model


def test_openai_whisper_backend_code_path():
    backend = OpenAIWhisperBackend(random_whisper(), "random-tiny", "cpu", sample_len=8)
    engine = WhisperEngine(WhisperSettings(), "cpu")
    engine.backend = backend
    clip = audio.decode(espeak_wav("Testing the GPU code path.", 8_000))
    result = engine.transcribe(clip, language="en", words=False)
    assert result.language == "en" and isinstance(result.text, str)
    assert all(s.end >= s.start for s in result.segments)


def random_kmodel(tmp_path):
    pytest.importorskip("kokoro", reason="kokoro not installed (extra kokoro-gpu)")
    import kokoro_onnx
    from kokoro import KModel
    from kokoro.istftnet import Decoder
    from kokoro.modules import CustomAlbert, ProsodyPredictor, TextEncoder
    from transformers import AlbertConfig

    config = json.loads((Path(kokoro_onnx.__file__).parent / "config.json").read_text())
    torch.manual_seed(0)
    parts = {
        "bert": CustomAlbert(AlbertConfig(vocab_size=config["n_token"], **config["plbert"])),
        "predictor": ProsodyPredictor(style_dim=config["style_dim"], d_hid=config["hidden_dim"],
                                      nlayers=config["n_layer"], max_dur=config["max_dur"],
                                      dropout=config["dropout"]),
        "text_encoder": TextEncoder(channels=config["hidden_dim"],
                                    kernel_size=config["text_encoder_kernel_size"],
                                    depth=config["n_layer"], n_symbols=config["n_token"]),
        "decoder": Decoder(dim_in=config["hidden_dim"], style_dim=config["style_dim"],
                           dim_out=config["n_mels"], disable_complex=True, **config["istftnet"]),
    }
    parts["bert_encoder"] = torch.nn.Linear(parts["bert"].config.hidden_size, config["hidden_dim"])
    with torch.no_grad():  # random durations would make ~35 s of audio
        parts["predictor"].duration_proj.linear_layer.bias.fill_(-3.0)
    weights = tmp_path / "kokoro-random.pth"
    torch.save({k: m.state_dict() for k, m in parts.items()}, weights)
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(weights),
                   disable_complex=True).eval()
    # The Blackwell workaround: a real-valued STFT instead of torch.stft's complex one.
    assert type(model.decoder.generator.stft).__name__ == "CustomSTFT"
    return model


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
    packs = {"af_test": torch.randn(510, 1, 256) * 0.1}
    backend = KModelBackend(random_kmodel(tmp_path), packs, "af_test", "random-kokoro")
    engine = KModelEngine(backend)
    engine.load()
    chunks = list(engine.stream("Two sentences here. And the second one.", sample_rate=16_000))
    assert len(chunks) == 2
    assert all(c.dtype == np.dtype("<i2") and 0 < len(c) < 16_000 * 20 for c in chunks)
    assert engine.info().voices == ["af_test"]
