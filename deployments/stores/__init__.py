"""Adapters for the four retrieval stores: Qdrant, the graph, PostgreSQL, Redis.

Each adapter raises ``StoreUnavailable`` when its server cannot be reached, so
the gateway answers 503 instead of 500. Records shared by several adapters
live here.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field


class StoreUnavailable(RuntimeError):
    """A store could not be reached; the request may be retried later."""

    def __init__(self, store: str, detail: str):
        super().__init__(f"{store} is unavailable: {detail}")
        self.store, self.detail = store, detail

    def __reduce__(self):
        """Rebuilt from both arguments: Ray pickles it on its way from a replica to the gateway."""
        return type(self), (self.store, self.detail)


@dataclass(frozen=True)
class Mention:
    """One entity span in a document, as NER found it."""

    name: str
    label: str
    start: int
    end: int
    score: float

    @property
    def entity_id(self) -> str:
        return entity_id(self.name, self.label)


@dataclass
class DocumentRecord:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)
    mentions: list[Mention] = field(default_factory=list)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text, self.metadata)


def entity_id(name: str, label: str) -> str:
    """One node per (label, case-folded name): 'Paris' and 'paris' are one place."""
    return f"{label.strip().lower()}:{' '.join(name.split()).casefold()}"


def content_hash(text: str, metadata: dict) -> str:
    import json

    blob = json.dumps({"text": text, "metadata": metadata}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def point_id(doc_id: str) -> str:
    """Qdrant wants UUIDs or integers; a document id maps to one UUID forever."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"her-serve:doc:{doc_id}"))
