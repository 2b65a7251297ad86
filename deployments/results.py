"""What deployments return to graphs and routes: the internal contracts, in one place.

Plain dataclasses (Ray pickles them between processes). Where an HTTP answer
has the same shape (search hits, graph entities, spans, replica info),
``graphs/schemas.py`` uses these types directly; routes build the other
shapes from them with ``model_validate(..., from_attributes=True)``. No numpy
at import: the client imports the schemas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # HTTP schemas import this module; the client needs no numpy
    import numpy as np


@dataclass
class EngineInfo:
    """What an engine says about itself; the fields an engine lacks stay None."""

    model: str = ""
    backend: str = ""
    device: str = ""
    dim: int | None = None
    """Embedders: vector size."""
    supports_dimensions: bool | None = None
    voices: list[str] | None = None
    """TTS: the voices it speaks."""
    default_voice: str | None = None
    sample_rate: int | None = None
    documents: int | None = None
    """Indexes: documents held."""
    entities: int | None = None
    source: str | None = None
    """Indexes: the store they load from."""
    llm: str | None = None
    """Voice graph: the chat endpoint."""
    tts: list[str] | None = None
    """Voice graph: the TTS engines it can speak with."""

    def fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(EngineInfo)}


@dataclass
class ReplicaInfo(EngineInfo):
    """One replica's ``info()``: its engine, where it runs, its memory, and whether it serves."""

    host: str | None = None
    node_id: str | None = None
    pid: int | None = None
    profile: str | None = None
    """The profile the replica resolved on its own node (gpu/cpu)."""
    available: bool = True
    """False: the replica runs but refuses calls (its weights are absent on its node)."""
    reason: str | None = None
    gpu_memory_gb: float | None = None
    gpu_memory_capped: bool = False
    gpu_memory_used_gb: float | None = None
    error: str | None = None
    """Set by the gateway when the replica could not be asked."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Embeddings:
    vectors: np.ndarray
    """Normalized float32, one row per input."""
    tokens: list[int]


@dataclass
class Word:
    start: float
    end: float
    word: str


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcription:
    text: str
    language: str
    duration: float
    segments: list[Segment]


@dataclass
class EntitySpan:
    """A named entity in a text (character offsets)."""

    text: str
    label: str
    score: float
    start: int
    """Character offset of the span's first character."""
    end: int
    """Character offset just past the span."""


@dataclass
class RetrievedDocument:
    """A vector search hit."""

    id: str
    score: float
    """Cosine similarity to the query."""
    text: str
    metadata: dict


@dataclass
class GraphEntity:
    id: str
    name: str
    label: str
    hops: int
    score: float
    """Personalized PageRank from the hits' entities."""
    documents: int


@dataclass
class GraphEdge:
    source: str
    target: str
    weight: int
    """Documents in which both entities appear."""


@dataclass
class RelatedDocument:
    id: str
    score: float


@dataclass
class GraphExpansion:
    entities: list[GraphEntity] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    related: list[RelatedDocument] = field(default_factory=list)


@dataclass
class Retrieval:
    query: str
    results: list[RetrievedDocument]
    expansion: GraphExpansion
    timings_ms: dict[str, float]

    @property
    def entities(self) -> list[GraphEntity]:
        return self.expansion.entities

    @property
    def edges(self) -> list[GraphEdge]:
        return self.expansion.edges

    @property
    def related(self) -> list[RelatedDocument]:
        return self.expansion.related


@dataclass
class IngestResult:
    written: list[str]
    unchanged: list[str]
    entities: int = 0
    entities_skipped: str | None = None
    refresh: str = "none"
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class ForgetResult:
    deleted: dict[str, bool]
    """Per id asked: whether any store held it (False: nothing to do, safe to retry)."""
    refresh: str = "none"
    """How the index replicas learned of it: "redis" or "direct"."""
