"""/v1/ingest, /v1/retrieve and /v1/ner served by the shared two-node test cluster.

GLiNER weights are not in the test cluster's model cache, so NER is absent:
ingest still embeds and stores, and says that entities were skipped.
"""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pytest

from deployments.embedding import EmbeddingEngine
from deployments.settings import EmbeddingSettings
from tests.corpus import QUERIES, documents


@pytest.fixture(scope="module")
def ingested(api):
    docs = documents()
    results = [api.post("/v1/ingest", json={"documents": docs[i : i + 200]})
               for i in range(0, len(docs), 200)]
    assert [r.status_code for r in results] == [200] * len(results), results[0].text
    return docs, [r.json() for r in results]


@pytest.fixture(scope="module")
def baseline_vectors(ingested):
    engine = EmbeddingEngine(EmbeddingSettings(), "cpu")
    engine.load()
    docs = ingested[0]
    return engine, engine.embed([d["text"] for d in docs]).vectors


def test_health_reports_why_ner_is_absent(api, ingested):
    deployments = api.get("/health").json()["deployments"]
    for name in ("VectorIndex", "GraphIndex", "RetrievalGraph", "IngestGraph"):
        assert deployments[name] == "ready"
    assert "urchade/gliner_multi-v2.1" in deployments["GlinerNER"]
    r = api.post("/v1/ner", json={"texts": ["Maria lives in Lisbon."], "labels": ["person"]})
    assert r.status_code == 503 and "GlinerNER is not running" in r.json()["error"]["message"]


def test_ingest_acknowledges_durable_writes(api, ingested, store_env):
    docs, results = ingested
    assert sorted(i for r in results for i in r["written"]) == sorted(d["id"] for d in docs)
    assert all("GlinerNER is not running" in r["entities_skipped"] for r in results)
    assert {r["refresh"] for r in results} == {"redis"}

    async def count() -> int:
        conn = await asyncpg.connect(store_env["SERVE_STORES__POSTGRES_URL"])
        try:
            return await conn.fetchval("SELECT count(*) FROM documents WHERE id LIKE 's%'")
        finally:
            await conn.close()

    assert asyncio.run(count()) == len(docs)


def test_retrieve_top10_equals_exact_baseline(api, baseline_vectors, ingested):
    engine, vectors = baseline_vectors
    ids = [d["id"] for d in ingested[0]]
    queries = engine.embed(QUERIES, is_query=True).vectors
    for query, q in zip(QUERIES, queries):
        r = api.post("/v1/retrieve", json={"query": query, "k": 10, "hops": 1})
        assert r.status_code == 200, r.text
        body = r.json()
        expected = [ids[j] for j in np.argsort(-(vectors @ q), kind="stable")[:10]]
        assert [h["id"] for h in body["results"]] == expected, query
        assert abs(body["results"][0]["score"] - float(vectors[ids.index(expected[0])] @ q)) < 1e-4
        assert set(body["timings_ms"]) == {"embed", "vector", "graph", "total"}


def test_reingest_changes_nothing_and_new_documents_are_found(api, ingested):
    docs = ingested[0]
    again = api.post("/v1/ingest", json={"documents": docs[:50]}).json()
    assert again["written"] == [] and len(again["unchanged"]) == 50
    new = {"id": "new-1", "text": "The octopus at the city aquarium escaped through a drain pipe.",
           "metadata": {"source": "news"}, "kind": "transcript"}
    assert api.post("/v1/ingest", json={"documents": [new]}).json()["written"] == ["new-1"]
    hit = api.post("/v1/retrieve", json={"query": "octopus escape", "k": 3}).json()["results"][0]
    assert hit["id"] == "new-1" and hit["metadata"] == {"source": "news", "kind": "transcript"}
    changed = {**new, "text": "The octopus was found in the harbour, safe and well."}
    assert api.post("/v1/ingest", json={"documents": [changed]}).json()["written"] == ["new-1"]
    hit = api.post("/v1/retrieve", json={"query": "octopus harbour", "k": 1}).json()["results"][0]
    assert hit["text"] == changed["text"]


@pytest.mark.parametrize(
    "path, body, status",
    [
        ("/v1/retrieve", {"query": ""}, 422),
        ("/v1/retrieve", {"query": "   "}, 422),
        ("/v1/retrieve", {"query": "x", "k": 0}, 422),
        ("/v1/retrieve", {"query": "x", "k": 10_000}, 422),
        ("/v1/retrieve", {"query": "x", "hops": 9}, 422),
        ("/v1/retrieve", {"query": "x", "labels": ["spaceship"]}, 422),
        ("/v1/ingest", {"documents": []}, 422),
        ("/v1/ingest", {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, 422),
        ("/v1/ingest", {"documents": [{"id": "a", "text": ""}]}, 422),
        ("/v1/ner", {"texts": [], "labels": ["person"]}, 422),
    ],
)
def test_bad_input_is_4xx_json(api, path, body, status):
    r = api.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_ten_megabyte_document_is_refused(api):
    r = api.post("/v1/ingest", json={"documents": [{"id": "big", "text": "a" * 10_000_000}]})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    assert api.post("/v1/retrieve", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
