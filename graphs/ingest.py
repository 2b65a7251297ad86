"""IngestGraph: documents -> NER -> embeddings -> PostgreSQL, Qdrant, the graph, Redis;
and forgetting them again from all of those.

Acknowledged only after the durable writes. Order: the PostgreSQL transaction
opens, Qdrant (through VectorIndex) and the graph store (through GraphIndex)
are written inside it, and it commits last, so the stored content hash, which
makes re-ingest a no-op, exists only once every store holds the document. A
failure anywhere, the commit included, rolls PostgreSQL back and puts Qdrant
and the graph back as they were before the write: new documents are deleted,
changed ones get their previous version again (docs/retrieval.md has the
details and the remaining limit). Forgetting (``forget``) deletes the same way:
inside PostgreSQL's transaction, with the same restore when anything fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.declaration import GraphDeclaration
from deployments.ner import NER
from deployments.profile import current_placement
from deployments.results import ForgetResult, IngestResult, ReplicaInfo
from deployments.settings import NerSettings, StoreSettings
from deployments.stores import DocumentRecord, Mention
from deployments.stores.postgres import PostgresStore
from deployments.stores.redis_cache import RedisCache, embed_with_cache
from graphs.retrieval import RETRIEVAL_USES, elapsed_ms, timed

log = logging.getLogger("ray.serve")


@dataclass
class Previous:
    """What Qdrant and the graph held for a batch before ingest wrote it."""

    points: list[tuple[str, np.ndarray, dict]]
    """(id, vector, payload) of the documents Qdrant had"""
    absent: list[str]
    """ids Qdrant did not have (new documents)"""
    mentions: dict[str, list[Mention]]
    """every id's graph mentions ([] for a new document)"""


@serve.deployment(max_ongoing_requests=16)
class IngestGraph:
    def __init__(
        self,
        stores: StoreSettings,
        ner_settings: NerSettings,
        embedder: DeploymentHandle,
        vectors: DeploymentHandle,
        graph: DeploymentHandle,
        ner: DeploymentHandle | None = None,
        ner_unavailable: str = "",
    ):
        self.ner_settings = ner_settings
        self.embedder, self.vectors, self.graph, self.ner = embedder, vectors, graph, ner
        self.ner_unavailable = ner_unavailable
        self.postgres = PostgresStore(stores.postgres_url) if stores.postgres_url else None
        self.redis = (
            RedisCache(stores.redis_url, stores.redis_prefix, stores.embedding_cache_ttl_s)
            if stores.redis_url else None
        )
        self.model_id: str | None = None

    async def ingest(self, documents: list[dict]) -> IngestResult:
        timings, start = {}, time.perf_counter()
        docs = [DocumentRecord(d["id"], d["text"], {**d["metadata"], "kind": d["kind"]})
                for d in documents]
        stored = await self._stored_hashes([d.id for d in docs])
        todo = [d for d in docs if stored.get(d.id) != d.content_hash]
        unchanged = [d.id for d in docs if stored.get(d.id) == d.content_hash]
        result = IngestResult([d.id for d in todo], unchanged, timings_ms=timings)
        if not todo:
            timings["total"] = elapsed_ms(start)
            return result
        # NER and embedding are independent: both run at once, each timed on its own.
        t = time.perf_counter()
        (result.entities_skipped, timings["ner"]), (vectors, timings["embed"]) = (
            await asyncio.gather(timed(self._extract(todo)),
                                 timed(self._embed([d.text for d in todo]))))
        result.entities = sum(len(d.mentions) for d in todo)
        timings["ner_and_embed"] = elapsed_ms(t)
        t = time.perf_counter()
        await self._write(todo, vectors)
        timings["write"] = elapsed_ms(t)
        result.refresh = await self._notify([d.id for d in todo])
        timings["total"] = elapsed_ms(start)
        return result

    async def _stored_hashes(self, ids: list[str]) -> dict[str, str]:
        """What is already stored: PostgreSQL's record, else the vector payloads."""
        if self.postgres:
            return await self.postgres.stored_hashes(ids)
        return await self.vectors.content_hashes.remote(ids)

    async def _extract(self, docs: list[DocumentRecord]) -> str | None:
        if self.ner is None:
            return f"GlinerNER is not running: {self.ner_unavailable}"
        spans = await self.ner.predict.remote(
            [d.text[: self.ner_settings.max_text_chars] for d in docs],
            self.ner_settings.labels, self.ner_settings.threshold,
        )
        for doc, found in zip(docs, spans):
            doc.mentions = [
                Mention(s.text, s.label, s.start, s.end, s.score) for s in found
            ]
        return None

    async def _embed(self, texts: list[str]):
        """Document embeddings (float32 array), from the Redis cache where present."""
        model = await self._model()

        async def compute(missing: list[str]):
            return (await self.embedder.embed.remote(missing)).vectors

        return await embed_with_cache(self.redis, model, texts, compute)

    async def _model(self) -> str:
        """The embedding model's id: half of every Redis cache key."""
        if self.model_id is None:
            self.model_id = (await self.embedder.info.remote()).model
        return self.model_id

    async def _write(self, docs: list[DocumentRecord], vectors) -> None:
        ids = [d.id for d in docs]
        payloads = [{"text": d.text, "metadata": d.metadata, "content_hash": d.content_hash}
                    for d in docs]
        relational = (
            self.postgres.write(docs, self.model_id, self.ner is not None)
            if self.postgres else contextlib.nullcontext()
        )
        async with self._restoring(relational, ids):
            await self.vectors.upsert.remote(ids, vectors, payloads)
            await self.graph.replace_documents.remote({d.id: d.mentions for d in docs})

    async def forget(self, ids: list[str]) -> ForgetResult:
        """Delete documents from PostgreSQL (with the entities only they mentioned), Qdrant,
        the graph store, Redis's embedding cache and every index replica; deleting what is
        absent is a no-op (``deleted`` False)."""
        relational = self.postgres.delete(ids) if self.postgres else contextlib.nullcontext({})
        async with self._restoring(relational, ids) as (stored, before):
            await self.vectors.delete.remote(ids)
            await self.graph.delete_documents.remote(ids)
        texts = dict(stored)  # id -> (text, embedding model)
        for doc_id, _, payload in before.points:
            texts.setdefault(doc_id, (payload.get("text", ""), None))
        held = set(texts) | {d for d, mentions in before.mentions.items() if mentions}
        if self.redis and texts:
            model = await self._model() if any(m is None for _, m in texts.values()) else None
            await self.redis.forget_embeddings([(m or model, t) for t, m in texts.values()])
        return ForgetResult({i: i in held for i in ids}, await self._notify(ids))

    @contextlib.asynccontextmanager
    async def _restoring(self, relational, ids: list[str]):
        """Runs the block inside ``relational`` (PostgreSQL's transaction, which commits
        last) and yields (what it yields, what Qdrant and the graph held for ``ids``); on
        any failure, the commit included, Qdrant and the graph get that back."""
        before: Previous | None = None
        try:
            async with relational as held:
                # Read inside the transaction: PostgreSQL holds these documents' row locks,
                # so a concurrent write of the same ids has committed (or restored) by now.
                before = await self._previous(ids)
                yield held, before
        except BaseException:
            if before is not None:  # else nothing was written outside PostgreSQL
                await self._restore(before)
            raise

    async def _previous(self, ids: list[str]) -> Previous:
        points = await self.vectors.fetch.remote(ids)
        mentions = await self.graph.mentions.remote(ids)
        stored = {p[0] for p in points}
        return Previous(points, [i for i in ids if i not in stored], mentions)

    async def _restore(self, before: Previous) -> None:
        """Best effort: put Qdrant and the graph back as they were, then tell every replica
        (the restoring calls may reach other replicas than the writes did)."""
        try:
            if before.points:
                ids, vectors, payloads = zip(*before.points)
                await self.vectors.upsert.remote(list(ids), np.stack(vectors), list(payloads))
            if before.absent:
                await self.vectors.delete.remote(before.absent)
            await self.graph.replace_documents.remote(before.mentions)
            await self._notify(list(before.mentions))
        except Exception:  # the store that failed may still be down; re-sending converges
            log.exception("could not restore %d documents after a failed ingest or forget",
                          len(before.mentions))

    async def _notify(self, ids: list[str]) -> str:
        """Tell every index replica; Redis pub/sub, else (or when Redis is down) directly."""
        if self.redis:
            try:
                await self.redis.publish({"ids": ids})
                return "redis"
            except Exception as exc:
                log.warning("refresh event not published (%s); telling replicas directly", exc)
        await self.vectors.broadcast("refresh", ids).results_async(timeout_s=30)
        await self.graph.broadcast("refresh", ids).results_async(timeout_s=30)
        return "direct"

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(model="ingest", backend="IngestGraph", device="cpu",
                           **current_placement().to_dict())


INGEST = GraphDeclaration(
    name="IngestGraph", task="ingest", deployment=IngestGraph,
    bind_args=lambda s: (s.stores, s.ner), uses=RETRIEVAL_USES, optional={"ner": NER.name},
)
