"""Qdrant, the source of truth for document vectors: a server by URL, or local mode on disk.

Local mode locks its folder to one process, so only the VectorIndex
deployment opens it (with one replica); a Qdrant server allows any number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from deployments.stores import StoreUnavailable, point_id

SCROLL_PAGE = 2048


class QdrantStore:
    def __init__(self, collection: str, url: str = "", path: Path | None = None):
        from qdrant_client import QdrantClient

        self.collection = collection
        self.where = url or str(path)
        try:
            self.client = QdrantClient(url=url, timeout=10) if url else QdrantClient(path=str(path))
        except Exception as exc:
            raise StoreUnavailable("qdrant", f"{self.where}: {exc}") from exc

    def _call(self, fn, *args, **kwargs):
        from qdrant_client.http.exceptions import ResponseHandlingException

        try:
            return fn(*args, **kwargs)
        except (ResponseHandlingException, ConnectionError, TimeoutError) as exc:
            raise StoreUnavailable("qdrant", f"{self.where}: {exc}") from exc

    def dim(self) -> int | None:
        """Vector size of the collection, or None before the first write."""
        if not self._call(self.client.collection_exists, self.collection):
            return None
        info = self._call(self.client.get_collection, self.collection)
        return int(info.config.params.vectors.size)

    def ensure(self, dim: int) -> None:
        from qdrant_client import models

        existing = self.dim()
        if existing is None:
            self._call(
                self.client.create_collection,
                self.collection,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
            )
        elif existing != dim:
            raise ValueError(
                f"collection {self.collection!r} holds {existing}-dim vectors, not {dim}: "
                "the embedding model changed; use another collection"
            )

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        from qdrant_client import models

        self.ensure(int(vectors.shape[1]))
        points = [
            models.PointStruct(id=point_id(i), vector=v.tolist(), payload={**p, "doc_id": i})
            for i, v, p in zip(ids, vectors, payloads)
        ]
        self._call(self.client.upsert, self.collection, points=points, wait=True)

    def delete(self, ids: list[str]) -> None:
        from qdrant_client import models

        if ids and self.dim() is not None:
            self._call(
                self.client.delete,
                self.collection,
                points_selector=models.PointIdsList(points=[point_id(i) for i in ids]),
                wait=True,
            )

    def fetch(self, ids: list[str]) -> Iterator[tuple[str, np.ndarray, dict]]:
        """(doc id, vector, payload) of the given documents that exist."""
        if not ids or self.dim() is None:
            return
        for p in self._call(
            self.client.retrieve, self.collection, [point_id(i) for i in ids],
            with_vectors=True, with_payload=True,
        ):
            yield p.payload["doc_id"], np.asarray(p.vector, dtype=np.float32), p.payload

    def scroll(self) -> Iterator[tuple[str, np.ndarray, dict]]:
        """Every point, page by page: how an index loads at start."""
        if self.dim() is None:
            return
        offset = None
        while True:
            points, offset = self._call(
                self.client.scroll, self.collection, limit=SCROLL_PAGE, offset=offset,
                with_vectors=True, with_payload=True,
            )
            for p in points:
                yield p.payload["doc_id"], np.asarray(p.vector, dtype=np.float32), p.payload
            if offset is None:
                return

    def query(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Qdrant's own nearest-neighbour search: the baseline the benchmark compares with."""
        result = self._call(
            self.client.query_points, self.collection, query=vector.tolist(), limit=k
        )
        return [(p.payload["doc_id"], float(p.score)) for p in result.points]

    def count(self) -> int:
        if self.dim() is None:
            return 0
        return int(self._call(self.client.count, self.collection, exact=True).count)

    def close(self) -> None:
        self.client.close()
