"""VectorIndexEngine on CPU: exact answers from real MiniLM vectors kept in Qdrant local mode."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.embedding import EmbeddingEngine
from deployments.settings import EmbeddingSettings, StoreSettings
from deployments.vector_index import ExactBackend, VectorIndexEngine
from tests.corpus import QUERIES, sentences


@pytest.fixture(scope="module")
def embedder() -> EmbeddingEngine:
    engine = EmbeddingEngine(EmbeddingSettings(), "cpu")
    engine.load()
    return engine


@pytest.fixture(scope="module")
def corpus(embedder) -> tuple[list[str], list[str], np.ndarray]:
    texts = sentences()
    return [f"s{i:03d}" for i in range(len(texts))], texts, embedder.embed(texts).vectors


def open_engine(path) -> VectorIndexEngine:
    engine = VectorIndexEngine(StoreSettings(qdrant_path=path, collection="t"), path, "cpu")
    engine.load()
    return engine


def test_exact_backend_matches_full_sort():
    """argpartition + sort must give the same order as sorting every score."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(3, 16)).astype(np.float32)
    backend = ExactBackend()
    backend.build(data)
    scores, idx = backend.search(queries, 10)
    expected = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    assert (idx == expected).all()
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_search_equals_exact_baseline_and_survives_restart(tmp_path, corpus, embedder):
    ids, texts, vectors = corpus
    engine = open_engine(tmp_path)
    engine.upsert(ids, vectors, [{"text": t, "content_hash": str(i)} for i, t in enumerate(texts)])
    q = embedder.embed(QUERIES, is_query=True).vectors
    baseline = np.argsort(-(q @ vectors.T), axis=1, kind="stable")[:, :10]
    got = engine.search(q, 10)
    assert [[h.id for h in hits] for hits in got] == [[ids[j] for j in row] for row in baseline]
    assert got[0][0].text == texts[baseline[0][0]]
    engine.store.close()
    reopened = open_engine(tmp_path)  # the index loads from Qdrant at start
    assert reopened.info().documents == len(ids)
    assert [h.id for h in reopened.search(q, 10)[0]] == [h.id for h in got[0]]
    reopened.store.close()


def test_incremental_updates_without_restart(tmp_path, corpus, embedder):
    ids, texts, vectors = corpus
    engine = open_engine(tmp_path)
    engine.upsert(ids[:50], vectors[:50], [{"text": t} for t in texts[:50]])
    new = embedder.embed(["The octopus at the aquarium escaped from its tank overnight."]).vectors
    engine.upsert(["new"], new, [{"text": "octopus"}])
    q = embedder.embed(["octopus escape"], is_query=True).vectors
    assert engine.search(q, 1)[0][0].id == "new"
    # Another writer changed Qdrant: refresh re-reads exactly those ids.
    engine.store.upsert(["other"], vectors[60:61], [{"text": texts[60]}])
    engine.store.delete(["new"])
    assert engine.refresh(["other", "new"]) == 1
    hits = [h.id for h in engine.search(q, 60)[0]]
    assert "new" not in hits and "other" in hits and len(hits) == 51
    engine.delete(["other"])
    assert engine.info().documents == 50 and engine.store.count() == 50
    engine.store.close()


def test_rejects_bad_k_and_dimensions(tmp_path, corpus):
    ids, texts, vectors = corpus
    engine = open_engine(tmp_path)
    engine.upsert(ids[:5], vectors[:5], [{} for _ in range(5)])
    with pytest.raises(ValueError, match="k must be"):
        engine.search(vectors[:1], 0)
    with pytest.raises(ValueError, match="dimensions"):
        engine.search(np.ones((1, 8), np.float32), 3)
    with pytest.raises(ValueError, match="384-dim"):
        engine.upsert(["x"], np.ones((1, 8), np.float32), [{}])
    engine.store.close()
