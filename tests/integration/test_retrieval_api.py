"""/v1/ingest, /v1/retrieve, /v1/ner and forgetting (/v1/documents) served by the shared
two-node test cluster.

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
        timings = body["timings_ms"]
        assert set(timings) == {"embed", "vector", "graph", "retrieval", "hop", "total"}
        stages = timings["embed"] + timings["vector"] + timings["graph"]
        assert stages <= timings["retrieval"] <= timings["retrieval"] + timings["hop"] <= timings["total"]


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


ALL_STORES = {"postgresql", "qdrant", "redis"}  # no NER here, so nothing in the graph


def hit_ids(api, query: str, k: int = 10) -> list[str]:
    r = api.post("/v1/retrieve", json={"query": query, "k": k})
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["results"]]


def test_forget_one_document_everywhere(api, stores_holding):
    doc = {"id": "forget/one", "text": "The violin maker in Cremona varnished a cello at midnight."}
    assert api.post("/v1/ingest", json={"documents": [doc]}).status_code == 200
    assert hit_ids(api, "violin maker varnish cello", 1) == [doc["id"]]
    assert stores_holding(doc["id"], doc["text"]) == ALL_STORES

    r = api.delete("/v1/documents/forget%2Fone")  # "/" in an id travels percent-encoded
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "document.deleted", "id": doc["id"], "deleted": True}
    assert doc["id"] not in hit_ids(api, "violin maker varnish cello")
    assert stores_holding(doc["id"], doc["text"]) == set()
    again = api.delete("/v1/documents/forget%2Fone")
    assert again.status_code == 200 and again.json()["deleted"] is False


def test_forget_several_at_once(api, stores_holding):
    docs = [{"id": f"forget-bulk-{i}", "text": text} for i, text in enumerate([
        "A tram climbed the hill to the old castle in the fog.",
        "The tram depot painted its oldest carriage bright yellow.",
        "Fog delayed every tram on the hill line this morning.",
    ])]
    assert api.post("/v1/ingest", json={"documents": docs}).status_code == 200
    ids = [docs[0]["id"], "forget-bulk-never", docs[2]["id"]]
    r = api.post("/v1/documents/delete", json={"ids": ids})
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "list", "data": [
        {"object": "document.deleted", "id": i, "deleted": i != "forget-bulk-never"} for i in ids]}
    hits = hit_ids(api, "tram hill fog castle depot")
    assert docs[1]["id"] in hits and not {docs[0]["id"], docs[2]["id"]} & set(hits)
    assert stores_holding(docs[0]["id"], docs[0]["text"]) == set()
    assert stores_holding(docs[1]["id"], docs[1]["text"]) == ALL_STORES


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("DELETE", "/v1/documents/" + "x" * 257, None),
        ("DELETE", "/v1/documents/", None),
        ("POST", "/v1/documents/delete", {"ids": []}),
        ("POST", "/v1/documents/delete", {"ids": ["a", "a"]}),
        ("POST", "/v1/documents/delete", {"ids": [""]}),
        ("POST", "/v1/documents/delete", {"ids": [f"d{i}" for i in range(257)]}),
        ("POST", "/v1/documents/delete", {"ids": "a"}),
        ("POST", "/v1/documents/delete", {"ids": ["a"], "force": True}),
    ],
)
def test_bad_deletes_are_422_json(api, method, path, body):
    r = api.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"]


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


def test_the_client_and_cli_forget(serve_cluster, stores_holding):
    """HerClient.forget and `her-serve forget` against the real stores (issue 12)."""
    from typer.testing import CliRunner

    from clients import HerClient
    from clients.cli import app

    docs = [{"id": f"client-forget-{i}", "text": text} for i, text in enumerate([
        "The beekeeper moved the hives to the clover field in June.",
        "Honey from the clover field was bottled by the beekeeper.",
        "A swarm of bees left the beekeeper's oldest hive at dawn.",
    ])]
    with HerClient([serve_cluster.base_url], serve_cluster.token) as client:
        client.ingest(docs)
        hits = {h["id"] for h in client.retrieve("beekeeper hives clover honey bees")["results"]}
        assert {d["id"] for d in docs} <= hits
        one = client.forget(docs[0]["id"])
        assert [(d.id, d.deleted) for d in one] == [(docs[0]["id"], True)]
        several = client.forget([docs[1]["id"], docs[0]["id"]])
        assert [(d.id, d.deleted) for d in several] == [(docs[1]["id"], True), (docs[0]["id"], False)]
        result = CliRunner().invoke(app, ["--url", serve_cluster.base_url, "--token",
                                          serve_cluster.token, "forget", docs[2]["id"]])
        assert result.exit_code == 0, result.output
        hits = {h["id"] for h in client.retrieve("beekeeper hives clover honey bees")["results"]}
    assert not {d["id"] for d in docs} & hits
    assert all(stores_holding(d["id"], d["text"]) == set() for d in docs)


def test_the_cli_ingests_files_retrieves_and_forgets_them(serve_cluster, stores_holding, tmp_path):
    """`her-serve ingest FILE...`, `retrieve` and `forget`, the way a person at a terminal
    keeps notes: each file a document named after it, stored in every store."""
    from typer.testing import CliRunner

    from clients.cli import app

    def her_serve(*args: str) -> str:
        result = CliRunner().invoke(app, ["--url", serve_cluster.base_url, "--token",
                                          serve_cluster.token, *args])
        assert result.exit_code == 0, result.output
        return result.output

    notes = {"cli-plumber.txt": "The plumber comes on Tuesday at nine to fix the kitchen sink.",
             "cli-piano.txt": "Piano lessons moved to Thursday afternoons at the music school."}
    for name, text in notes.items():
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / name) for name in notes]
    out = her_serve("ingest", *paths)
    assert {f"written: {name}" for name in notes} <= set(out.splitlines())
    assert "GlinerNER is not running" in " ".join(out.split())  # why no entities
    assert set(her_serve("ingest", *paths).splitlines()) >= {f"unchanged: {n}" for n in notes}
    found = her_serve("retrieve", "when does the plumber come to fix the sink", "-k", "3")
    first = next(line for line in found.splitlines() if line.startswith("│ 1 "))
    assert "cli-plumber.txt" in first, found  # the best hit
    assert all(stores_holding(name, text) >= {"postgresql", "qdrant"} for name, text in notes.items())
    her_serve("forget", *notes)
    assert all(stores_holding(name, text) == set() for name, text in notes.items())
