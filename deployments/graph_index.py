"""Entity-graph expansion: from the documents a search hit to the entities around them.

The graph: entities joined by co-occurrence (two entities mentioned in one
document), weighted by how many documents they share. CPU: NetworkX. GPU:
cuGraph (depth-limited BFS, personalized PageRank). The source of truth is
Neo4j or the embedded SQLite store; ingest's deltas apply without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Protocol

from ray import serve

from deployments.declaration import AVAILABLE, Availability, ModelDeclaration
from deployments.profile import resolve_profile
from deployments.results import (
    EngineInfo, GraphEdge, GraphEntity, GraphExpansion, RelatedDocument,
)
from deployments.runtime import ModelReplica
from deployments.settings import Settings, StoreSettings
from deployments.stores import Mention
from deployments.stores.graph_store import GraphStore, open_graph_store, pairs
from deployments.stores.redis_cache import IndexRefresher

log = logging.getLogger("ray.serve")

MAX_HOPS = 3


class GraphBackend(Protocol):
    device: str

    def build(self, weights: dict[tuple[str, str], int]) -> None:
        """Replace the graph by these weighted undirected edges."""

    def bfs(self, seeds: list[str], depth: int) -> dict[str, int]:
        """Every node within ``depth`` hops of a seed, with its distance."""

    def ppr(self, seeds: list[str], within: set[str]) -> dict[str, float]:
        """Personalized PageRank restarting at the seeds, over (at least) ``within``."""


class NetworkXBackend:
    device = "cpu"

    def __init__(self) -> None:
        import networkx as nx

        self.nx = nx
        self.graph = nx.Graph()

    def build(self, weights: dict[tuple[str, str], int]) -> None:
        graph = self.nx.Graph()
        graph.add_weighted_edges_from((a, b, w) for (a, b), w in weights.items())
        self.graph = graph

    def bfs(self, seeds: list[str], depth: int) -> dict[str, int]:
        present = [s for s in seeds if s in self.graph]
        found = {s: 0 for s in seeds}
        if not present:
            return found
        for d, layer in enumerate(self.nx.bfs_layers(self.graph, present)):
            if d > depth:
                break
            for node in layer:
                found.setdefault(node, d)
        return found

    def ppr(self, seeds: list[str], within: set[str]) -> dict[str, float]:
        """On the BFS neighbourhood only: its cost stays bounded as the graph grows."""
        present = [s for s in seeds if s in self.graph]
        if not present:
            return {s: 1.0 / len(seeds) for s in seeds} if seeds else {}
        sub = self.graph.subgraph(within)
        return self.nx.pagerank(sub, personalization={s: 1.0 for s in present})


class CugraphBackend:
    """cuGraph on the GPU; node ids are mapped to integers for it."""

    device = "cuda"

    def __init__(self) -> None:
        try:
            import cudf  # noqa: F401
            import cugraph  # noqa: F401
        except ImportError as exc:
            raise ImportError("cuGraph is not installed (pip install '.[gpu]')", name=exc.name) from exc
        self.graph = None
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def build(self, weights: dict[tuple[str, str], int]) -> None:
        import cudf
        import cugraph

        self.names = sorted({n for edge in weights for n in edge})
        self.ids = {n: i for i, n in enumerate(self.names)}
        edges = cudf.DataFrame({
            "src": [self.ids[a] for a, _ in weights],
            "dst": [self.ids[b] for _, b in weights],
            "weight": [float(w) for w in weights.values()],
        })
        self.graph = cugraph.Graph(directed=False)
        if len(edges):
            self.graph.from_cudf_edgelist(edges, "src", "dst", "weight")

    def bfs(self, seeds: list[str], depth: int) -> dict[str, int]:
        import cudf
        import cugraph

        found = {s: 0 for s in seeds}
        starts = [self.ids[s] for s in seeds if s in self.ids]
        if not starts or self.graph is None:
            return found
        frame = cugraph.bfs(self.graph, start=cudf.Series(starts), depth_limit=depth)
        frame = frame[frame["distance"] <= depth].to_pandas()
        for vertex, dist in zip(frame["vertex"], frame["distance"]):
            found.setdefault(self.names[int(vertex)], int(dist))
        return found

    def ppr(self, seeds: list[str], within: set[str]) -> dict[str, float]:
        """On the whole graph (cheap on a GPU), reported for ``within``."""
        import cudf
        import cugraph

        starts = [self.ids[s] for s in seeds if s in self.ids]
        if not starts or self.graph is None:
            return {s: 1.0 / len(seeds) for s in seeds} if seeds else {}
        personal = cudf.DataFrame({"vertex": starts, "values": [1.0 / len(starts)] * len(starts)})
        frame = cugraph.pagerank(self.graph, personalization=personal).to_pandas()
        ranks = {self.names[int(v)]: float(p) for v, p in zip(frame["vertex"], frame["pagerank"])}
        return {n: r for n, r in ranks.items() if n in within}


class GraphIndexEngine:
    """The co-occurrence graph in memory, and which entities each document mentions."""

    def __init__(self, stores: StoreSettings, data_dir: Path, profile: str = "auto"):
        self.stores = stores
        self.data_dir = Path(data_dir)
        self.profile = resolve_profile(profile)
        self.store: GraphStore | None = None
        self.backend: GraphBackend | None = None
        self.entities: dict[str, tuple[str, str]] = {}
        self.doc_entities: dict[str, set[str]] = {}
        self.entity_docs: dict[str, set[str]] = {}
        self.weights: Counter = Counter()
        self.lock = threading.Lock()

    def availability(self) -> Availability:
        if self.profile == "gpu":
            try:
                import cugraph  # noqa: F401
            except ImportError:
                return Availability(False, "cuGraph is not installed (pip install '.[gpu]')")
        return AVAILABLE

    def load(self) -> None:
        self.store = open_graph_store(self.stores, self.data_dir)
        self.backend = CugraphBackend() if self.profile == "gpu" else NetworkXBackend()
        snap = self.store.snapshot()
        self._apply(snap.entities, snap.doc_entities)
        log.info("graph index loaded %d entities, %d documents", len(self.entities), len(self.doc_entities))

    def replace_documents(self, docs: dict[str, list[Mention]]) -> None:
        """Write each document's mentions to the store (durable), then apply them here."""
        for doc_id, mentions in docs.items():
            self.store.replace_document(doc_id, mentions)
        self.refresh(list(docs))

    def delete_documents(self, doc_ids: list[str]) -> None:
        """Forget these documents in the store (durable), then here."""
        for doc_id in doc_ids:
            self.store.delete_document(doc_id)
        self.refresh(doc_ids)

    def mentions(self, doc_ids: list[str]) -> dict[str, list[Mention]]:
        """These documents' mentions in the store (``replace_documents`` restores them)."""
        return self.store.mentions(doc_ids)

    def refresh(self, doc_ids: list[str]) -> int:
        """Re-read these documents' edges from the store (another replica wrote them)."""
        snap = self.store.snapshot(doc_ids)
        self._apply(snap.entities, snap.doc_entities)
        return len(doc_ids)

    def _apply(self, entities: dict[str, tuple[str, str]], doc_entities: dict[str, set[str]]) -> None:
        """Make these documents' entities exactly these; an entity no document mentions any
        more is forgotten here too."""
        with self.lock:
            self.entities.update(entities)
            dropped: set[str] = set()
            for doc_id, new in doc_entities.items():
                old = self.doc_entities.pop(doc_id, set())
                self.weights.subtract(pairs(old))
                for e in old:
                    self.entity_docs.get(e, set()).discard(doc_id)
                dropped |= old
                if new:
                    self.doc_entities[doc_id] = set(new)
                    self.weights.update(pairs(new))
                    for e in new:
                        self.entity_docs.setdefault(e, set()).add(doc_id)
            for e in dropped:
                if not self.entity_docs.get(e):
                    self.entity_docs.pop(e, None)
                    self.entities.pop(e, None)
            self.weights = +self.weights  # drop pairs no document shares any more
            self.backend.build(dict(self.weights))

    def expand(
        self, doc_ids: list[str], hops: int, labels: list[str] | None = None, limit: int = 50
    ) -> GraphExpansion:
        """Entities of ``doc_ids`` and those within ``hops`` co-occurrence hops, ranked by
        personalized PageRank from the hit documents' entities; documents that mention
        them but were not hits come back as ``related``."""
        if not 0 <= hops <= MAX_HOPS:
            raise ValueError(f"hops must be between 0 and {MAX_HOPS}")
        wanted = {label.lower() for label in labels} if labels else None
        with self.lock:
            seeds = sorted({e for d in doc_ids for e in self.doc_entities.get(d, ())})
            if not seeds:
                return GraphExpansion()
            distance = self.backend.bfs(seeds, hops)
            rank = self.backend.ppr(seeds, set(distance))
            chosen = [
                e for e in distance
                if e in self.entities and (wanted is None or self.entities[e][1].lower() in wanted)
            ]
            chosen.sort(key=lambda e: (-rank.get(e, 0.0), e))
            chosen = chosen[:limit]
            keep = set(chosen)
            entities = [
                GraphEntity(e, self.entities[e][0], self.entities[e][1], distance[e],
                               rank.get(e, 0.0), len(self.entity_docs.get(e, ())))
                for e in chosen
            ]
            edges = [GraphEdge(a, b, w) for (a, b), w in self.weights.items() if a in keep and b in keep]
            hits = set(doc_ids)
            related: Counter = Counter()
            for e in chosen:
                for d in self.entity_docs.get(e, ()):
                    if d not in hits:
                        related[d] += rank.get(e, 0.0)
        return GraphExpansion(
            entities, edges, [RelatedDocument(d, s) for d, s in related.most_common(limit)])

    def info(self) -> EngineInfo:
        return EngineInfo(model="graph-index", backend=type(self.backend).__name__,
                          device=self.backend.device, entities=len(self.entities),
                          documents=len(self.doc_entities),
                          source="neo4j" if self.stores.neo4j_uri else "sqlite")

    def probe(self) -> None:
        """A one-hop walk from a known entity must find at least that entity."""
        with self.lock:
            seed = next(iter(self.entity_docs), None)
            if seed is not None and seed not in self.backend.bfs([seed], 1):
                raise RuntimeError("the graph backend lost a known entity")


@serve.deployment(max_ongoing_requests=64)
class GraphIndex(ModelReplica):
    """Serves one GraphIndexEngine; ingest writes through it, refresh events keep it current."""

    def __init__(self, make_engine, settings: Settings, profile: str, gpu_memory_gb: float = 0.0):
        super().__init__(make_engine, settings, profile, gpu_memory_gb)
        if not self.unavailable:
            self.refresher = IndexRefresher(self.engine, settings.stores, "graph")

    async def expand(
        self, doc_ids: list[str], hops: int, labels: list[str] | None = None
    ) -> GraphExpansion:
        return await asyncio.to_thread(self.engine.expand, doc_ids, hops, labels)

    async def replace_documents(self, docs: dict[str, list[Mention]]) -> None:
        await asyncio.to_thread(self.engine.replace_documents, docs)

    async def delete_documents(self, doc_ids: list[str]) -> None:
        await asyncio.to_thread(self.engine.delete_documents, doc_ids)

    async def mentions(self, doc_ids: list[str]) -> dict[str, list[Mention]]:
        return await asyncio.to_thread(self.engine.mentions, doc_ids)

    async def refresh(self, doc_ids: list[str]) -> int:
        return await asyncio.to_thread(self.engine.refresh, doc_ids)


GRAPH_INDEX = ModelDeclaration(
    name="GraphIndex", task="graph-index", deployment=GraphIndex,
    section=lambda s: s.stores,
    engine=lambda s, profile: GraphIndexEngine(s.stores, s.data_dir, profile),
)
