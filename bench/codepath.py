"""GPU engines' code paths with random weights from small configs: no quality, only plumbing.

Each function runs one declared model's production backend (the one a GPU
node loads) on ``device`` and returns a short note; ``CODE_PATHS`` maps them
to deployment names. Used by ``bench/gpu_smoke.py`` (on CUDA, no Ray) and by
the code-path unit tests (on CPU). Nothing here downloads anything: the
tokenizers are built in place and every library is imported lazily, so a
missing one is reported by the caller as a skip.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

WORDS = ("the", "train", "leaves", "at", "five", "station", "where", "is", "maria", "lives",
         "in", "lisbon", "tom", "works", "acme", "testing", "code", "path", ".", ",", "?")


def word_tokenizer(folder: Path, bert: bool = False):
    """A small word-level fast tokenizer saved in ``folder`` (no hub, no model package)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate([*specials, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
        **({"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"} if bert else {}),
    )
    tok.save_pretrained(folder)
    return tok


def random_whisper(device: str = "cpu"):
    """openai-whisper with small dims (n_audio_ctx 1500 and the full vocabulary are required)."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2,
                           n_audio_layer=1, n_vocab=51865, n_text_ctx=448, n_text_state=64,
                           n_text_head=2, n_text_layer=1)
    model = Whisper(dims).eval()
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)  # created with torch.empty
    return model.to(device)


def random_kmodel(folder: Path, device: str = "cpu"):
    """Kokoro's KModel (disable_complex, as on Blackwell) from its real config, random weights."""
    import kokoro_onnx
    import torch
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
    weights = Path(folder) / "kokoro-random.pth"
    torch.save({k: m.state_dict() for k, m in parts.items()}, weights)
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(weights),
                   disable_complex=True).eval()
    return model.to(device)


def tiny_qwen3(folder: Path) -> Path:
    """A random Qwen3 (tiny config) with a word tokenizer, saved as a model folder."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    tok = word_tokenizer(folder)
    cfg = Qwen3Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
    )
    Qwen3Model(cfg).save_pretrained(folder)
    return folder


def tiny_gliner(folder: Path, model_name: str, device: str = "cpu") -> Path:
    """A random GLiNER (one small BERT layer) saved where NerEngine reads ``model_name``."""
    import gliner
    import torch

    torch.manual_seed(0)
    tok_dir = Path(folder) / "tokenizer"
    word_tokenizer(tok_dir, bert=True)
    config = gliner.GLiNERConfig(
        model_name=str(tok_dir),
        encoder_config={"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 64},
        hidden_size=64, span_mode="markerV0",
    )
    model = gliner.GLiNER.from_config(config, backbone_from_pretrained=False, local_files_only=True)
    root = Path(folder) / "cache"
    model.save_pretrained(root / model_name)
    return root


# --- one function per declared model: build, run once, say what came out -------------------

def embedder(device: str) -> str:
    from deployments.embedding import EmbeddingEngine, Qwen3Backend
    from deployments.settings import EmbeddingSettings

    with tempfile.TemporaryDirectory() as tmp:
        backend = Qwen3Backend("tiny-qwen3", tiny_qwen3(Path(tmp)), 128, device=device)
        engine = EmbeddingEngine(EmbeddingSettings(), "cpu")
        engine.backend = backend
        vectors = engine.embed(["where is the station", "the train leaves at five"],
                               is_query=True, dimensions=32).vectors
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()
    return f"vectors {vectors.shape}"


def whisper(device: str) -> str:
    from deployments import audio
    from deployments.settings import WhisperSettings
    from deployments.stt import OpenAIWhisperBackend, WhisperEngine

    engine = WhisperEngine(WhisperSettings(), "cpu")
    engine.backend = OpenAIWhisperBackend(random_whisper(device), "random-tiny", device,
                                          sample_len=8)
    t = np.arange(16_000 * 2) / 16_000
    clip = audio.Audio((0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000)
    result = engine.transcribe(clip, language="en")
    return f"{len(result.segments)} segments"


def kokoro(device: str) -> str:
    import torch

    from deployments.kokoro import KModelBackend
    from deployments.tts import TTSEngine

    with tempfile.TemporaryDirectory() as tmp:
        model = random_kmodel(Path(tmp), device)
    packs = {"af_test": torch.randn(510, 1, 256, device=device) * 0.1}
    engine = TTSEngine()
    engine.backend = KModelBackend(model, packs, "af_test", "random-kokoro")
    samples = engine.synthesize("Testing the code path.", "af_test")
    assert len(samples) > 0
    return f"{len(samples) / engine.backend.sample_rate:.2f} s of audio"


def gliner_ner(device: str) -> str:
    from deployments.ner import NerEngine
    from deployments.settings import NerSettings

    settings = NerSettings()
    with tempfile.TemporaryDirectory() as tmp:
        engine = NerEngine(settings, tiny_gliner(Path(tmp), settings.model), "cpu")
        engine.profile = device if device == "cpu" else "gpu"  # where from_pretrained maps it
        engine.load()
        spans = engine.predict(["Maria lives in Lisbon."], ["person", "place"], 0.0)
    return f"{len(spans[0])} spans"


def vector_index(device: str) -> str:
    from deployments.vector_index import CuvsBackend, ExactBackend

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((2_000, 64)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    backend = CuvsBackend() if device == "cuda" else ExactBackend()
    backend.build(rows)
    _, idx = backend.search(rows[:8], 5)
    assert (idx[:, 0] == np.arange(8)).all(), "a stored vector must find itself first"
    return f"{type(backend).__name__}, 2000 rows"


def graph_index(device: str) -> str:
    from deployments.graph_index import CugraphBackend, NetworkXBackend

    backend = CugraphBackend() if device == "cuda" else NetworkXBackend()
    backend.build({("a", "b"): 2, ("b", "c"): 1, ("c", "d"): 1})
    found = backend.bfs(["a"], 2)
    assert found == {"a": 0, "b": 1, "c": 2}, found
    rank = backend.ppr(["a"], set(found))
    return f"{type(backend).__name__}, ppr over {len(rank)} nodes"


CODE_PATHS: dict[str, Callable[[str], str]] = {
    "Embedder": embedder,
    "WhisperSTT": whisper,
    "KokoroTTS": kokoro,
    "GlinerNER": gliner_ner,
    "VectorIndex": vector_index,
    "GraphIndex": graph_index,
}
SAME_AS = {"BatchEmbedder": "Embedder"}
"""Deployments whose engine code path is another's (same engine, other weights)."""
NOT_SMOKED = {
    "PiperTTS": "CPU only: no GPU code path",
    "ChatterboxTTS": "chatterbox-tts runs in its own runtime_env (it pins torch)",
    "ChatLLM": "no GPU code path: the GPU profile forwards to vLLM, outside Ray",
}
