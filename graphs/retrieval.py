"""RetrievalGraph: query text -> embedding -> vector top-k -> entity-graph expansion.

Composes the Embedder, VectorIndex and GraphIndex deployments through awaited
handles; numpy arrays pass between them untouched.
"""

from __future__ import annotations

import time
from typing import Awaitable, TypeVar

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.declaration import GraphDeclaration
from deployments.embedding import EMBEDDER
from deployments.graph_index import GRAPH_INDEX
from deployments.profile import current_placement
from deployments.results import ReplicaInfo, Retrieval
from deployments.vector_index import VECTOR_INDEX
from graphs.embed_calls import EmbedCalls

T = TypeVar("T")


def with_context(system: str, context: list[str]) -> str:
    """An LLM's system prompt with the texts retrieval found for the question (voice turns
    and chat completions with ``retrieve``)."""
    if not context:
        return system
    found = "What you know that may help:\n" + "\n".join(f"- {text}" for text in context)
    return f"{system}\n\n{found}" if system else found


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


async def timed(awaitable: Awaitable[T]) -> tuple[T, float]:
    """What ``awaitable`` gives and how long it took (ms), for stages run side by side."""
    start = time.perf_counter()
    value = await awaitable
    return value, elapsed_ms(start)


@serve.deployment(max_ongoing_requests=64)
class RetrievalGraph:
    def __init__(self, embedder: DeploymentHandle, vectors: DeploymentHandle, graph: DeploymentHandle):
        self.embedder = EmbedCalls(embedder)
        self.vectors = vectors
        self.graph = graph

    async def retrieve(self, query: str, k: int, hops: int, labels: list[str] | None) -> Retrieval:
        """Ranked hits (exact vector order), their entity neighbourhood, per-stage timings:
        each model's stage (its hop and its work) and this graph's whole call."""
        timings, start = {}, time.perf_counter()
        t = time.perf_counter()
        embedded = await self.embedder.embed([query], True)
        timings["embed"] = elapsed_ms(t)
        t = time.perf_counter()
        hits = (await self.vectors.search.remote(embedded.vectors, k))[0]
        timings["vector"] = elapsed_ms(t)
        t = time.perf_counter()
        expansion = await self.graph.expand.remote([h.id for h in hits], hops, labels)
        timings["graph"] = elapsed_ms(t)
        timings["retrieval"] = elapsed_ms(start)
        return Retrieval(query, hits, expansion, timings)

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(model="retrieval", backend="RetrievalGraph", device="cpu",
                           **current_placement().to_dict())


RETRIEVAL_USES = {
    "embedder": EMBEDDER.name, "vectors": VECTOR_INDEX.name, "graph": GRAPH_INDEX.name,
}
RETRIEVAL = GraphDeclaration(
    name="RetrievalGraph", task="retrieval", deployment=RetrievalGraph, uses=RETRIEVAL_USES,
)
