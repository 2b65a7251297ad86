"""RetrievalGraph: query text -> embedding -> vector top-k -> entity-graph expansion.

Composes the Embedder, VectorIndex and GraphIndex deployments through awaited
handles; numpy arrays pass between them untouched.
"""

from __future__ import annotations

import time

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.profile import current_placement


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


@serve.deployment(max_ongoing_requests=64)
class RetrievalGraph:
    def __init__(self, embedder: DeploymentHandle, vectors: DeploymentHandle, graph: DeploymentHandle):
        self.embedder = embedder
        self.vectors = vectors
        self.graph = graph

    async def retrieve(self, query: str, k: int, hops: int, labels: list[str] | None) -> dict:
        """Ranked hits (exact vector order), their entity neighbourhood, per-stage timings."""
        timings, start = {}, time.perf_counter()
        t = time.perf_counter()
        embedded = await self.embedder.embed.remote([query], True, None)
        timings["embed"] = elapsed_ms(t)
        t = time.perf_counter()
        hits = (await self.vectors.search.remote(embedded["vectors"], k))[0]
        timings["vector"] = elapsed_ms(t)
        t = time.perf_counter()
        expansion = await self.graph.expand.remote([h["id"] for h in hits], hops, labels)
        timings["graph"] = elapsed_ms(t)
        timings["total"] = elapsed_ms(start)
        return {"query": query, "results": hits, **expansion, "timings_ms": timings}

    def info(self) -> dict:
        return {"model": "retrieval", "backend": "RetrievalGraph", "device": "cpu",
                **current_placement().to_dict()}
