"""IngestGraph without Ray: a commit that fails after Qdrant and the graph were written
leaves every store, and each index in memory, on the previous version; forgetting
removes a document from every store and index, or (failing) from none.

Real engines and stores: MiniLM, VectorIndexEngine over Qdrant local mode and
GraphIndexEngine over SQLite in tmp_path, the session's PostgreSQL database
(whose ``die_at_commit`` trigger makes the server drop the connection at COMMIT)
and Redis. GLiNER weights are absent here, so the NER handle answers with
hand-made spans.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from deployments.embedding import EmbeddingEngine
from deployments.graph_index import GraphIndexEngine
from deployments.results import Embeddings, EngineInfo, EntitySpan
from deployments.settings import EmbeddingSettings, NerSettings, StoreSettings
from deployments.stores import DocumentRecord, Mention, StoreUnavailable
from deployments.vector_index import VectorIndexEngine
from graphs.ingest import IngestGraph

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Handle:
    """``handle.method.remote(...)`` as IngestGraph calls it, run on a local object."""

    def __init__(self, target):
        self.target = target

    def __getattr__(self, name: str):
        method = getattr(self.target, name)
        return SimpleNamespace(remote=lambda *a, **kw: asyncio.to_thread(method, *a, **kw))


class Embedder:
    def __init__(self):
        self.engine = EmbeddingEngine(EmbeddingSettings(), "cpu")
        self.engine.load()

    def info(self) -> EngineInfo:
        return self.engine.info()

    def embed(self, texts: list[str]) -> Embeddings:
        return self.engine.embed(texts)


class Ner:
    """GlinerNER's predict: the spans written here for each text."""

    def __init__(self, spans: dict[str, list[Mention]]):
        self.spans = spans

    def predict(self, texts: list[str], labels: list[str], threshold: float) -> list[list[EntitySpan]]:
        return [[EntitySpan(m.name, m.label, m.score, m.start, m.end) for m in self.spans[t]]
                for t in texts]


def span(text: str, name: str, label: str) -> Mention:
    start = text.index(name)
    return Mention(name, label, start, start + len(name), 0.9)


V1 = "Ada met Tom in Turin to talk about engines."
V2 = "Ada moved to Lisbon with Grace."
NEW = "Grace opened a bakery in Lisbon."
SPANS = {
    V1: [span(V1, "Ada", "person"), span(V1, "Tom", "person"), span(V1, "Turin", "place")],
    V2: [span(V2, "Ada", "person"), span(V2, "Lisbon", "place"), span(V2, "Grace", "person")],
    NEW: [span(NEW, "Grace", "person"), span(NEW, "Lisbon", "place")],
}


@dataclass
class Memory:
    """An IngestGraph over real engines and stores, each reachable for checks."""

    ingest: IngestGraph
    vectors: VectorIndexEngine
    graph: GraphIndexEngine
    embedder: Embedder
    ner: Ner


@pytest.fixture
async def memory(tmp_path, store_env):
    stores = StoreSettings(
        postgres_url=store_env["SERVE_STORES__POSTGRES_URL"],
        redis_url=store_env["SERVE_STORES__REDIS_URL"],
        redis_prefix=store_env["SERVE_STORES__REDIS_PREFIX"] + "-restore",
        qdrant_path=tmp_path / "qdrant", graph_path=tmp_path / "graph.sqlite",
    )
    vectors = VectorIndexEngine(stores, tmp_path, "cpu")
    graph = GraphIndexEngine(stores, tmp_path, "cpu")
    vectors.load()
    graph.load()
    embedder, ner = Embedder(), Ner(dict(SPANS))
    ingest = IngestGraph.func_or_class(
        stores, NerSettings(), Handle(embedder), Handle(vectors), Handle(graph), Handle(ner),
    )
    yield Memory(ingest, vectors, graph, embedder, ner)
    await ingest.postgres.close()
    await ingest.redis.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_a_failed_commit_restores_the_previous_version(memory, die_at_commit):
    ingest, vectors, graph, embedder = memory.ingest, memory.vectors, memory.graph, memory.embedder
    changed, new = unique("restore"), unique("restore-new")
    v1 = {"id": changed, "text": V1, "metadata": {"v": 1}, "kind": "document"}
    assert (await ingest.ingest([v1])).written == [changed]
    v1_hash = DocumentRecord(changed, V1, {"v": 1, "kind": "document"}).content_hash
    v1_vector = embedder.engine.embed([V1]).vectors[0]
    v1_entities = {m.entity_id for m in SPANS[V1]}

    v2 = {**v1, "text": V2, "metadata": {"v": 2, die_at_commit: True}}
    with pytest.raises(StoreUnavailable, match="postgresql"):
        await ingest.ingest([v2, {**v1, "id": new, "text": NEW}])

    assert await ingest.postgres.stored_hashes([changed, new]) == {changed: v1_hash}
    # Qdrant and the index in memory: v1's payload and vector, the new document gone.
    [(_, stored_vector, payload)] = vectors.fetch([changed, new])
    assert payload["text"] == V1 and payload["content_hash"] == v1_hash
    assert np.allclose(stored_vector, v1_vector, atol=1e-5)
    row = vectors.rows[changed]
    assert vectors.payloads[row]["text"] == V1 and new not in vectors.rows
    assert np.allclose(vectors.vectors[row], v1_vector, atol=1e-5)
    assert vectors.search(v1_vector, 1)[0][0].text == V1
    # The graph store and the graph in memory: v1's mentions, none for the new document.
    restored = graph.mentions([changed, new])
    assert set(restored[changed]) == set(SPANS[V1]) and restored[new] == []
    assert graph.doc_entities[changed] == v1_entities and new not in graph.doc_entities
    assert {e.id for e in graph.expand([changed], 0).entities} == v1_entities

    # Without the marker, v2 is written everywhere.
    v2_clean = {**v2, "metadata": {"v": 2}}
    assert (await ingest.ingest([v2_clean])).written == [changed]
    assert vectors.fetch([changed])[0][2]["text"] == V2
    assert set(graph.mentions([changed])[changed]) == set(SPANS[V2])


async def relational(ingest: IngestGraph, ids: list[str]) -> tuple[set[str], set[str], set[str]]:
    """PostgreSQL's documents, documents with mentions, and entities, among these."""
    async with ingest.postgres._conn() as conn:
        docs = await conn.fetch("SELECT id FROM documents WHERE id = ANY($1::text[])", ids)
        mentioned = await conn.fetch(
            "SELECT DISTINCT document_id FROM mentions WHERE document_id = ANY($1::text[])", ids)
        entities = await conn.fetch("SELECT id FROM entities")
    return ({r[0] for r in docs}, {r[0] for r in mentioned}, {r[0] for r in entities})


async def cached(ingest: IngestGraph, text: str) -> bool:
    return (await ingest.redis.get_embeddings(await ingest._model(), [text]))[0] is not None


async def test_forget_removes_a_document_from_every_store_and_index(memory):
    ingest, vectors, graph = memory.ingest, memory.vectors, memory.graph
    gone, kept = unique("forget"), unique("forget-kept")
    # A person no other document of the session's database mentions; Lisbon and Grace
    # are in NEW too.
    who = "Ada" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])
    text = f"{who} moved to Lisbon with Grace."
    memory.ner.spans[text] = [span(text, who, "person"), span(text, "Lisbon", "place"),
                              span(text, "Grace", "person")]
    assert (await ingest.ingest([{"id": gone, "text": text, "metadata": {}, "kind": "document"},
                                 {"id": kept, "text": NEW, "metadata": {}, "kind": "document"}]
                                )).written == [gone, kept]
    assert await cached(ingest, text)
    ada = span(text, who, "person").entity_id

    result = await ingest.forget([gone, "never-stored"])
    assert result.deleted == {gone: True, "never-stored": False}
    docs, mentioned, entities = await relational(ingest, [gone, kept])
    assert docs == mentioned == {kept}
    assert ada not in entities and {m.entity_id for m in SPANS[NEW]} <= entities
    assert vectors.fetch([gone]) == [] and gone not in vectors.rows
    query = memory.embedder.engine.embed([text]).vectors[0]
    assert gone not in {h.id for h in vectors.search(query, 10)[0]}
    assert graph.mentions([gone]) == {gone: []} and gone not in graph.doc_entities
    assert ada not in graph.entities and ada not in {e.id for e in graph.expand([kept], 3).entities}
    assert not await cached(ingest, text) and await cached(ingest, NEW)
    assert vectors.fetch([kept]) and graph.doc_entities[kept]  # the other one is untouched

    assert (await ingest.forget([gone])).deleted == {gone: False}  # idempotent


async def test_a_failed_forget_leaves_the_document_everywhere(memory, die_at_delete):
    ingest, vectors, graph = memory.ingest, memory.vectors, memory.graph
    doc_id = unique("forget-fails")
    doc = {"id": doc_id, "text": V1, "metadata": {die_at_delete: True}, "kind": "document"}
    assert (await ingest.ingest([doc])).written == [doc_id]
    [(_, vector, payload)] = vectors.fetch([doc_id])

    with pytest.raises(StoreUnavailable, match="postgresql"):  # PostgreSQL dies at COMMIT
        await ingest.forget([doc_id])

    docs, mentioned, entities = await relational(ingest, [doc_id])
    assert docs == mentioned == {doc_id} and {m.entity_id for m in SPANS[V1]} <= entities
    [(_, vector_after, payload_after)] = vectors.fetch([doc_id])
    assert payload_after == payload and np.allclose(vector_after, vector)
    assert vectors.search(vector, 1)[0][0].id == doc_id
    assert set(graph.mentions([doc_id])[doc_id]) == set(SPANS[V1])
    assert graph.doc_entities[doc_id] == {m.entity_id for m in SPANS[V1]}
    assert {m.entity_id for m in SPANS[V1]} <= set(graph.entities)
