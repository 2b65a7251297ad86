"""GPU engines' code paths with random weights: no quality, only plumbing and memory.

Each function runs one declared model's production backend (the one a GPU
node loads) on ``device`` and returns a short note with the warm call's time;
``CODE_PATHS`` maps them to deployment names. ``size="small"`` builds tiny
configs (the CPU tests); ``size="production"`` builds the production models'
own dimensions (Qwen3-Embedding 0.6B and 8B, Whisper large-v3, GLiNER's
mDeBERTa-v3-base; Kokoro's config is its real one at both sizes), so that on
a GPU the peak memory is the real model's and can be held to its declared cap.
Each calls ``built()`` once its model is built, before it serves. Used by
``bench/gpu_smoke.py`` (on CUDA, no Ray) and by the code-path unit tests (on CPU). Nothing here downloads anything: the
tokenizers are built in place and every library is imported lazily, so a
missing one is reported by the caller as a skip.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

WORDS = ("the", "train", "leaves", "at", "five", "station", "where", "is", "maria", "lives",
         "in", "lisbon", "tom", "works", "acme", "testing", "code", "path", ".", ",", "?")


def word_tokenizer(folder: Path, bert: bool = False, vocab_size: int = 0):
    """A word-level fast tokenizer saved in ``folder`` (no hub, no model package), padded
    with unused entries to ``vocab_size`` where a model sizes its embeddings from it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [*specials, *WORDS]
    words += [f"[unused{i}]" for i in range(vocab_size - len(words))]
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
        **({"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"} if bert else {}),
    )
    tok.save_pretrained(folder)
    return tok


SIZES = ("small", "production")

WHISPER_DIMS = {  # n_audio_ctx 1500 and the full vocabulary are required at any size
    "small": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                  n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1),
    "production": dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20,
                       n_audio_layer=32, n_vocab=51866, n_text_ctx=448, n_text_state=1280,
                       n_text_head=20, n_text_layer=32),  # large-v3
}
QWEN3_DIMS = {
    "small": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "0.6B": dict(vocab_size=151669, hidden_size=1024, intermediate_size=3072,
                 num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128),
    "8B": dict(vocab_size=151665, hidden_size=4096, intermediate_size=12288,
               num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128),
}
GLINER_DIMS = {
    "small": dict(encoder={"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 64},
                  hidden_size=64),
    "production": dict(encoder={"model_type": "deberta-v2", "hidden_size": 768,  # mdeberta-v3-base
                                "num_hidden_layers": 12, "num_attention_heads": 12,
                                "intermediate_size": 3072, "vocab_size": 250105,
                                "relative_attention": True, "position_buckets": 256,
                                "pos_att_type": ["p2c", "c2p"], "max_relative_positions": -1,
                                "position_biased_input": False, "norm_rel_ebd": "layer_norm",
                                "share_att_key": True},
                       hidden_size=512),  # gliner_multi-v2.1
}


def nothing() -> None:
    pass


def warm_ms(run: Callable[[], object], device: str, repeats: int = 3) -> float:
    """Median wall time of ``run()`` in ms after one warm-up call (CUDA work included)."""
    def sync():
        if device == "cuda":
            import torch

            torch.cuda.synchronize()

    run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def random_whisper(device: str = "cpu", size: str = "small"):
    """openai-whisper with random weights at ``size`` (built on ``device``, fp32 as load_model)."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    with torch.device(device):
        model = Whisper(ModelDimensions(**WHISPER_DIMS[size])).eval()
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)  # torch.empty
    return model


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


def random_qwen3(folder: Path, dims: str, device: str):
    """A random Qwen3 of ``dims`` (a QWEN3_DIMS key) on ``device`` (bf16 on CUDA, as the
    backend loads it), with a word tokenizer saved in ``folder``: (model, tokenizer)."""
    import torch
    from transformers import AutoModel, Qwen3Config

    torch.manual_seed(0)
    tok = word_tokenizer(folder)
    cfg = Qwen3Config(**{"vocab_size": len(tok), **QWEN3_DIMS[dims]},
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModel.from_config(cfg, dtype=dtype)
    return model, tok


def tiny_gliner(folder: Path, model_name: str, size: str = "small") -> Path:
    """A random GLiNER at ``size`` saved where NerEngine reads ``model_name``."""
    import gliner
    import torch

    torch.manual_seed(0)
    tok_dir = Path(folder) / "tokenizer"
    dims = GLINER_DIMS[size]
    word_tokenizer(tok_dir, bert=True, vocab_size=dims["encoder"]["vocab_size"])
    config = gliner.GLiNERConfig(
        model_name=str(tok_dir), encoder_config=dims["encoder"],
        hidden_size=dims["hidden_size"], span_mode="markerV0",
    )
    model = gliner.GLiNER.from_config(config, backbone_from_pretrained=False, local_files_only=True)
    root = Path(folder) / "cache"
    model.save_pretrained(root / model_name)
    return root


# --- one function per declared model: build, run, say what came out and the warm time ------

def embedder(device: str, size: str = "small", built: Callable[[], None] = nothing,
             dims: str = "0.6B") -> str:
    from deployments.embedding import ENCODE_CHUNK, EmbeddingEngine, Qwen3Backend
    from deployments.settings import EmbeddingSettings

    with tempfile.TemporaryDirectory() as tmp:
        model, tok = random_qwen3(Path(tmp), dims if size == "production" else "small", device)
    built()
    settings = EmbeddingSettings()
    tokens = settings.gpu_batch_forward_tokens if dims == "8B" else settings.gpu_forward_tokens
    engine = EmbeddingEngine(settings, "cpu")
    engine.backend = Qwen3Backend(f"random-qwen3-{dims}", model, tok, settings.max_seq_length,
                                  tokens)
    # Production: one full forward chunk of inputs at the longest the model sees (the peak).
    words = 8 if size == "small" else settings.max_seq_length
    count = 32 if size == "small" else ENCODE_CHUNK
    texts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(words)) for i in range(count)]
    vectors = engine.embed(texts, is_query=True, dimensions=32).vectors
    assert vectors.shape == (count, 32) and np.isfinite(vectors).all()
    ms = warm_ms(lambda: engine.embed(texts, is_query=True), device)
    return f"vectors {vectors.shape}, {count} texts of {words} words warm {ms:.1f} ms"


def batch_embedder(device: str, size: str = "small", built: Callable[[], None] = nothing) -> str:
    return embedder(device, size, built, dims="8B")


def whisper(device: str, size: str = "small", built: Callable[[], None] = nothing) -> str:
    from deployments import audio
    from deployments.settings import WhisperSettings
    from deployments.stt import OpenAIWhisperBackend, WhisperEngine

    # VAD (Silero ONNX inside faster-whisper) runs on CPU in every profile: the CPU suite
    # tests it; here only the GPU model's path runs.
    engine = WhisperEngine(WhisperSettings(vad=False), "cpu")
    engine.backend = OpenAIWhisperBackend(random_whisper(device, size), f"random-{size}", device,
                                          sample_len=8)
    built()
    t = np.arange(16_000 * 5) / 16_000
    clip = audio.Audio((0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000)
    result = engine.transcribe(clip, language="en")
    ms = warm_ms(lambda: engine.transcribe(clip, language="en"), device)
    return f"{len(result.segments)} segments, 5 s clip warm {ms:.1f} ms (8 tokens a window)"


def kokoro(device: str, size: str = "small", built: Callable[[], None] = nothing) -> str:
    import torch

    from deployments.kokoro import KModelBackend
    from deployments.text import TTS_SENTENCE_CHARS
    from deployments.tts import TTSEngine

    with tempfile.TemporaryDirectory() as tmp:
        model = random_kmodel(Path(tmp), device)
    packs = {"af_test": torch.randn(510, 1, 256, device=device) * 0.1}
    engine = TTSEngine()
    engine.backend = KModelBackend(model, packs, "af_test", "random-kokoro")
    built()
    sentence = "Testing the code path of the station."
    if size == "production":  # the longest sentence a request may hold (the peak)
        sentence = (sentence[:-1] + ", ") * (TTS_SENTENCE_CHARS // len(sentence))
        sentence = sentence[: TTS_SENTENCE_CHARS - 1].rstrip(", ") + "."
    samples = engine.synthesize(sentence, "af_test")
    assert len(samples) > 0
    ms = warm_ms(lambda: engine.synthesize(sentence, "af_test"), device)
    return (f"{len(sentence)} chars, {len(samples) / engine.backend.sample_rate:.2f} s of audio, "
            f"warm {ms:.1f} ms")


def gliner_ner(device: str, size: str = "small", built: Callable[[], None] = nothing) -> str:
    from deployments.ner import NerEngine
    from deployments.settings import NerSettings

    settings = NerSettings()
    texts = ["Maria lives in Lisbon.", "Tom works at Acme where the train leaves at five."] * 8
    if size == "production":  # inputs past GLiNER's 384-word window (the peak)
        texts = [" ".join([t] * 60) for t in texts]
    with tempfile.TemporaryDirectory() as tmp:
        engine = NerEngine(settings, tiny_gliner(Path(tmp), settings.model, size), "cpu")
        engine.profile = device if device == "cpu" else "gpu"  # where from_pretrained maps it
        engine.load()
    built()
    spans = engine.predict(texts, ["person", "place"], 0.0)
    ms = warm_ms(lambda: engine.predict(texts, ["person", "place"], 0.0), device)
    words = max(len(t.split()) for t in texts)
    return f"{len(spans[0])} spans, 16 texts of up to {words} words warm {ms:.1f} ms"


def vector_index(device: str, size: str = "small", built: Callable[[], None] = nothing) -> str:
    from deployments.vector_index import CuvsBackend, ExactBackend

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((2_000 if size == "small" else 100_000, 64)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    backend = CuvsBackend() if device == "cuda" else ExactBackend()
    built()
    backend.build(rows)
    _, idx = backend.search(rows[:8], 5)
    assert (idx[:, 0] == np.arange(8)).all(), "a stored vector must find itself first"
    ms = warm_ms(lambda: backend.search(rows[:32], 10), device)
    return f"{type(backend).__name__}, {len(rows)} rows, 32 queries warm {ms:.1f} ms"


def graph_index(device: str, size: str = "small", built: Callable[[], None] = nothing) -> str:
    from deployments.graph_index import CugraphBackend, NetworkXBackend

    backend = CugraphBackend() if device == "cuda" else NetworkXBackend()
    built()
    backend.build({("a", "b"): 2, ("b", "c"): 1, ("c", "d"): 1})
    found = backend.bfs(["a"], 2)
    assert found == {"a": 0, "b": 1, "c": 2}, found
    rank = backend.ppr(["a"], set(found))
    ms = warm_ms(lambda: backend.ppr(["a"], set(backend.bfs(["a"], 2))), device)
    return f"{type(backend).__name__}, ppr over {len(rank)} nodes warm {ms:.1f} ms"


CODE_PATHS: dict[str, Callable[..., str]] = {
    "Embedder": embedder,
    "BatchEmbedder": batch_embedder,
    "WhisperSTT": whisper,
    "KokoroTTS": kokoro,
    "GlinerNER": gliner_ner,
    "VectorIndex": vector_index,
    "GraphIndex": graph_index,
}
NOT_SMOKED = {
    "PiperTTS": "CPU only: no GPU code path",
    "ChatterboxTTS": "chatterbox-tts runs in its own runtime_env (it pins torch)",
    "ChatLLM": "no GPU code path: the GPU profile forwards to vLLM, outside Ray",
}
