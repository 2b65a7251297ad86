"""Nearest-neighbour search over document vectors, loaded from Qdrant.

CPU: exact top-k by one matrix product, so recall is the exact answer. GPU:
cuVS, CAGRA for large collections and brute force for small ones. Qdrant stays
the source of truth: the index loads from it at start and applies ingest's
deltas (``refresh``) without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from ray import serve

from deployments.declaration import AVAILABLE, Availability, ModelDeclaration
from deployments.profile import resolve_profile
from deployments.results import EngineInfo, RetrievedDocument
from deployments.runtime import ModelReplica
from deployments.settings import Settings, StoreSettings
from deployments.stores.qdrant_store import QdrantStore
from deployments.stores.redis_cache import IndexRefresher

log = logging.getLogger("ray.serve")

CAGRA_MIN_ROWS = 50_000  # below this a GPU brute-force scan beats building a graph
MAX_K = 1000


class SearchBackend(Protocol):
    device: str

    def build(self, vectors: np.ndarray) -> None:
        """Index these rows (normalized float32); called again after every change."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row indices), each (n_queries, k), best first."""


class ExactBackend:
    """Cosine similarity against every row: exact, and fast enough to 100K on a CPU."""

    device = "cpu"

    def __init__(self) -> None:
        self.vectors = np.zeros((0, 0), np.float32)

    def build(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self.vectors.T
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top_scores, order, 1), np.take_along_axis(top, order, 1)


class CuvsBackend:
    """cuVS on the GPU: CAGRA past CAGRA_MIN_ROWS rows, brute force below."""

    device = "cuda"

    def __init__(self) -> None:
        try:
            import cupy  # noqa: F401
            from cuvs.neighbors import brute_force, cagra  # noqa: F401
        except ImportError as exc:
            raise ImportError("cuVS is not installed (pip install '.[gpu]')", name=exc.name) from exc
        self.index = None
        self.kind = ""

    def build(self, vectors: np.ndarray) -> None:
        import cupy as cp
        from cuvs.neighbors import brute_force, cagra

        data = cp.asarray(vectors)
        if len(vectors) >= CAGRA_MIN_ROWS:
            self.kind = "cagra"
            self.index = cagra.build(cagra.IndexParams(metric="inner_product"), data)
        else:
            self.kind = "brute_force"
            self.index = brute_force.build(data, metric="inner_product")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import cupy as cp
        from cuvs.neighbors import brute_force, cagra

        q = cp.asarray(queries)
        if self.kind == "cagra":
            dist, idx = cagra.search(cagra.SearchParams(), self.index, q, k)
        else:
            dist, idx = brute_force.search(self.index, q, k)
        return cp.asnumpy(cp.asarray(dist)), cp.asnumpy(cp.asarray(idx)).astype(np.int64)


class VectorIndexEngine:
    """Holds every document vector in memory in row order, with its id and payload."""

    def __init__(self, stores: StoreSettings, data_dir: Path, profile: str = "auto"):
        self.stores = stores
        self.data_dir = Path(data_dir)
        self.profile = resolve_profile(profile)
        self.store: QdrantStore | None = None
        self.backend: SearchBackend | None = None
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.payloads: list[dict] = []
        self.vectors = np.zeros((0, 0), np.float32)
        self.lock = threading.Lock()

    def availability(self) -> Availability:
        if self.profile == "gpu":
            try:
                import cuvs  # noqa: F401
            except ImportError:
                return Availability(False, "cuVS is not installed (pip install '.[gpu]')")
        return AVAILABLE

    def load(self) -> None:
        self.store = QdrantStore(
            self.stores.collection,
            url=self.stores.qdrant_url,
            path=self.stores.qdrant_path or self.data_dir / "qdrant",
        )
        self.backend = CuvsBackend() if self.profile == "gpu" else ExactBackend()
        rows = list(self.store.scroll())
        self._replace_all(rows)
        log.info("vector index loaded %d documents from Qdrant", len(self.ids))

    def _replace_all(self, rows: list[tuple[str, np.ndarray, dict]]) -> None:
        with self.lock:
            self.ids, self.payloads, self.rows = [], [], {}
            self.vectors = np.zeros((0, 0), np.float32)
            self._append(rows)

    def _append(self, rows: list[tuple[str, np.ndarray, dict]]) -> None:
        if rows:
            stacked = _normalized(np.stack([r[1] for r in rows]))
            self.vectors = np.vstack([self.vectors, stacked]) if self.ids else stacked
            for doc_id, _, payload in rows:
                self.rows[doc_id] = len(self.ids)
                self.ids.append(doc_id)
                self.payloads.append(payload)
        if self.ids:
            self.backend.build(self.vectors)

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        """Write to Qdrant (durable), then apply to this replica's index."""
        self.store.upsert(ids, vectors, payloads)
        self._apply(list(zip(ids, np.asarray(vectors, np.float32), payloads)), [])

    def delete(self, ids: list[str]) -> None:
        self.store.delete(ids)
        self._apply([], ids)

    def fetch(self, ids: list[str]) -> list[tuple[str, np.ndarray, dict]]:
        """(id, vector, payload) in Qdrant of those of ``ids`` that are stored there."""
        return list(self.store.fetch(ids))

    def refresh(self, ids: list[str]) -> int:
        """Re-read these documents from Qdrant (another replica wrote them)."""
        found = self.fetch(ids)
        present = {f[0] for f in found}
        self._apply(found, [i for i in ids if i not in present])
        return len(found)

    def _apply(self, rows: list[tuple[str, np.ndarray, dict]], removed: list[str]) -> None:
        """Replace or add ``rows``, drop ``removed``, rebuild the backend once."""
        with self.lock:
            gone = {self.rows[i] for i in removed if i in self.rows}
            if gone:
                keep = [r for r in range(len(self.ids)) if r not in gone]
                self.ids = [self.ids[r] for r in keep]
                self.payloads = [self.payloads[r] for r in keep]
                self.vectors = self.vectors[keep]
                self.rows = {d: i for i, d in enumerate(self.ids)}
            new = []
            for doc_id, vec, payload in rows:
                row = self.rows.get(doc_id)
                if row is None:
                    new.append((doc_id, vec, payload))
                else:
                    self.vectors[row] = _normalized(vec[None, :])[0]
                    self.payloads[row] = payload
            self._append(new)

    def content_hashes(self, ids: list[str]) -> dict[str, str]:
        """The stored content hash of each given document that is indexed."""
        with self.lock:
            return {i: self.payloads[self.rows[i]].get("content_hash", "")
                    for i in ids if i in self.rows}

    def search(self, vectors: np.ndarray, k: int) -> list[list[RetrievedDocument]]:
        """Per query: up to k hits, best first."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}")
        queries = np.atleast_2d(np.asarray(vectors, np.float32))
        with self.lock:
            if not self.ids:
                return [[] for _ in queries]
            if queries.shape[1] != self.vectors.shape[1]:
                raise ValueError(
                    f"query has {queries.shape[1]} dimensions; the index holds "
                    f"{self.vectors.shape[1]}"
                )
            scores, idx = self.backend.search(queries, min(k, len(self.ids)))
            return [
                [
                    RetrievedDocument(self.ids[j], float(s), self.payloads[j].get("text", ""),
                              self.payloads[j].get("metadata", {}))
                    for s, j in zip(srow, irow)
                ]
                for srow, irow in zip(scores, idx)
            ]

    def info(self) -> EngineInfo:
        return EngineInfo(model=f"vector-index:{self.stores.collection}",
                          backend=type(self.backend).__name__, device=self.backend.device,
                          documents=len(self.ids), source=self.stores.qdrant_url or "qdrant-local")

    def probe(self) -> None:
        """Search for a stored row: it must come back first (nothing to search when empty)."""
        with self.lock:
            first = self.vectors[:1].copy() if self.ids else None
        if first is not None and not self.search(first, 1)[0]:
            raise RuntimeError("the vector index found nothing for a stored vector")


def _normalized(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


@serve.deployment(max_ongoing_requests=64)
class VectorIndex(ModelReplica):
    """Serves one VectorIndexEngine; ingest writes through it, refresh events keep it current."""

    def __init__(self, make_engine, settings: Settings, profile: str, gpu_memory_gb: float = 0.0):
        super().__init__(make_engine, settings, profile, gpu_memory_gb)
        if not self.unavailable:
            self.refresher = IndexRefresher(self.engine, settings.stores, "vector")

    async def search(self, vectors: np.ndarray, k: int) -> list[list[RetrievedDocument]]:
        return await asyncio.to_thread(self.engine.search, vectors, k)

    async def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        await asyncio.to_thread(self.engine.upsert, ids, vectors, payloads)

    async def delete(self, ids: list[str]) -> None:
        await asyncio.to_thread(self.engine.delete, ids)

    async def fetch(self, ids: list[str]) -> list[tuple[str, np.ndarray, dict]]:
        return await asyncio.to_thread(self.engine.fetch, ids)

    async def refresh(self, ids: list[str]) -> int:
        return await asyncio.to_thread(self.engine.refresh, ids)

    def content_hashes(self, ids: list[str]) -> dict[str, str]:
        return self.engine.content_hashes(ids)


VECTOR_INDEX = ModelDeclaration(
    name="VectorIndex", task="vector-index", deployment=VectorIndex,
    section=lambda s: s.stores,
    engine=lambda s, profile: VectorIndexEngine(s.stores, s.data_dir, profile),
)
