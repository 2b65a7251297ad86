"""The entity graph's source of truth: Neo4j over Bolt, or an embedded SQLite file.

Both hold (:Document)-[:MENTIONS]->(:Entity) and (:Entity)-[:CO_OCCURS]-(:Entity)
per document, behind one Protocol. Writes replace a document's edges
whole, so re-ingesting a document is idempotent; an entity no document
mentions any more is deleted with the last mention.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from deployments.stores import Mention, StoreUnavailable


@dataclass
class GraphSnapshot:
    """Entities and, per document, the entities it mentions (co-occurrence follows)."""

    entities: dict[str, tuple[str, str]] = field(default_factory=dict)
    """entity id -> (name, label)"""
    doc_entities: dict[str, set[str]] = field(default_factory=dict)


class GraphStore(Protocol):
    def replace_document(self, doc_id: str, mentions: list[Mention]) -> None:
        """Make ``doc_id``'s MENTIONS and CO_OCCURS edges exactly these."""

    def delete_document(self, doc_id: str) -> None:
        """Forget ``doc_id``: its edges, and the entities only it mentioned."""

    def mentions(self, doc_ids: list[str]) -> dict[str, list[Mention]]:
        """Each given document's mentions as stored ([] for one without any); a mention's
        name and label are its entity's, so writing them back gives the same entity ids."""

    def snapshot(self, doc_ids: list[str] | None = None) -> GraphSnapshot:
        """The whole graph, or only what the given documents mention."""

    def close(self) -> None: ...


def pairs(entity_ids: set[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(sorted(entity_ids), 2))


class SqliteGraphStore:
    """Embedded default: one SQLite file under the data dir; safe across processes."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS entities (id TEXT PRIMARY KEY, name TEXT NOT NULL, label TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS mentions (
        doc_id TEXT NOT NULL, entity_id TEXT NOT NULL REFERENCES entities(id),
        start INTEGER NOT NULL, "end" INTEGER NOT NULL, score REAL NOT NULL,
        PRIMARY KEY (doc_id, entity_id, start));
    CREATE TABLE IF NOT EXISTS co_occurs (
        a TEXT NOT NULL, b TEXT NOT NULL, doc_id TEXT NOT NULL, PRIMARY KEY (a, b, doc_id));
    CREATE INDEX IF NOT EXISTS mentions_entity ON mentions(entity_id);
    CREATE INDEX IF NOT EXISTS co_occurs_doc ON co_occurs(doc_id);
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(self.SCHEMA)
        self.lock = threading.Lock()

    def replace_document(self, doc_id: str, mentions: list[Mention]) -> None:
        with self.lock, self.db:
            before = self._delete(doc_id)
            self.db.executemany(
                "INSERT INTO entities VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING",
                {(m.entity_id, m.name, m.label) for m in mentions},
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO mentions VALUES (?, ?, ?, ?, ?)",
                [(doc_id, m.entity_id, m.start, m.end, m.score) for m in mentions],
            )
            self.db.executemany(
                "INSERT INTO co_occurs VALUES (?, ?, ?)",
                [(a, b, doc_id) for a, b in pairs({m.entity_id for m in mentions})],
            )
            self._prune(before)

    def delete_document(self, doc_id: str) -> None:
        with self.lock, self.db:
            self._prune(self._delete(doc_id))

    def _delete(self, doc_id: str) -> set[str]:
        """Drop the document's edges; returns the entities it mentioned."""
        self.db.execute("DELETE FROM co_occurs WHERE doc_id = ?", (doc_id,))
        rows = self.db.execute("DELETE FROM mentions WHERE doc_id = ? RETURNING entity_id", (doc_id,))
        return {r[0] for r in rows.fetchall()}

    def _prune(self, candidates: set[str]) -> None:
        """Delete those of ``candidates`` that no document mentions any more."""
        self.db.executemany(
            "DELETE FROM entities WHERE id = ? AND NOT EXISTS "
            "(SELECT 1 FROM mentions WHERE entity_id = entities.id)",
            [(e,) for e in candidates],
        )

    def mentions(self, doc_ids: list[str]) -> dict[str, list[Mention]]:
        found: dict[str, list[Mention]] = {d: [] for d in doc_ids}
        with self.lock:
            rows = self.db.execute(
                'SELECT m.doc_id, e.name, e.label, m.start, m."end", m.score '
                "FROM mentions m JOIN entities e ON e.id = m.entity_id "
                f"WHERE m.doc_id IN ({','.join('?' * len(doc_ids))}) ORDER BY m.doc_id, m.start, e.id",
                tuple(doc_ids),
            ).fetchall()
        for doc_id, *mention in rows:
            found[doc_id].append(Mention(*mention))
        return found

    def snapshot(self, doc_ids: list[str] | None = None) -> GraphSnapshot:
        snap = GraphSnapshot()
        query = (
            "SELECT m.doc_id, e.id, e.name, e.label FROM mentions m JOIN entities e ON e.id = m.entity_id"
        )
        args: tuple = ()
        if doc_ids is not None:
            query += f" WHERE m.doc_id IN ({','.join('?' * len(doc_ids))})"
            args = tuple(doc_ids)
            snap.doc_entities = {d: set() for d in doc_ids}
        with self.lock:
            rows = self.db.execute(query, args).fetchall()
        for doc_id, eid, name, label in rows:
            snap.entities[eid] = (name, label)
            snap.doc_entities.setdefault(doc_id, set()).add(eid)
        return snap

    def close(self) -> None:
        self.db.close()


class Neo4jGraphStore:
    """Neo4j over Bolt: the production graph on Titan."""

    def __init__(self, uri: str, user: str, password: str):
        import neo4j

        self.uri = uri
        self.driver = neo4j.GraphDatabase.driver(uri, auth=(user, password))
        self._run(lambda tx: tx.run(
            "CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE"
        ).consume())
        self._run(lambda tx: tx.run(
            "CREATE CONSTRAINT document_id IF NOT EXISTS FOR (d:Document) REQUIRE d.id IS UNIQUE"
        ).consume())

    def _run(self, work, read: bool = False):
        import neo4j.exceptions as nx

        try:
            with self.driver.session() as session:
                return (session.execute_read if read else session.execute_write)(work)
        except (nx.ServiceUnavailable, nx.SessionExpired, nx.AuthError, OSError) as exc:
            raise StoreUnavailable("neo4j", f"{self.uri}: {exc}") from exc

    @staticmethod
    def _delete(tx, doc_id: str) -> list[str]:
        """Drop the document's edges; returns the entities it mentioned."""
        before = tx.run(
            "MATCH (d:Document {id: $doc})-[m:MENTIONS]->(e:Entity) DELETE m "
            "RETURN collect(DISTINCT e.id) AS ids", doc=doc_id,
        ).single()["ids"]
        tx.run(
            "MATCH ()-[c:CO_OCCURS]->() WHERE $doc IN c.docs "
            "SET c.docs = [x IN c.docs WHERE x <> $doc] "
            "WITH c WHERE size(c.docs) = 0 DELETE c",
            doc=doc_id,
        ).consume()
        return before

    @staticmethod
    def _prune(tx, candidates: list[str]) -> None:
        """Delete those of ``candidates`` that no document mentions any more."""
        tx.run(
            "MATCH (e:Entity) WHERE e.id IN $ids AND NOT (e)<-[:MENTIONS]-() DETACH DELETE e",
            ids=candidates,
        ).consume()

    def replace_document(self, doc_id: str, mentions: list[Mention]) -> None:
        rows = [
            {"id": m.entity_id, "name": m.name, "label": m.label,
             "start": m.start, "end": m.end, "score": m.score}
            for m in mentions
        ]
        links = [{"a": a, "b": b} for a, b in pairs({m.entity_id for m in mentions})]

        def work(tx):
            before = self._delete(tx, doc_id)
            tx.run(
                "MERGE (d:Document {id: $doc}) WITH d UNWIND $rows AS r "
                "MERGE (e:Entity {id: r.id}) ON CREATE SET e.name = r.name, e.label = r.label "
                "CREATE (d)-[:MENTIONS {start: r.start, end: r.end, score: r.score}]->(e)",
                doc=doc_id, rows=rows,
            ).consume()
            tx.run(
                "UNWIND $links AS l MATCH (a:Entity {id: l.a}), (b:Entity {id: l.b}) "
                "MERGE (a)-[c:CO_OCCURS]->(b) ON CREATE SET c.docs = [] "
                "SET c.docs = c.docs + $doc",
                links=links, doc=doc_id,
            ).consume()
            self._prune(tx, before)

        self._run(work)

    def delete_document(self, doc_id: str) -> None:
        def work(tx):
            before = self._delete(tx, doc_id)
            tx.run("MATCH (d:Document {id: $doc}) DETACH DELETE d", doc=doc_id).consume()
            self._prune(tx, before)

        self._run(work)

    def mentions(self, doc_ids: list[str]) -> dict[str, list[Mention]]:
        def work(tx):
            return list(tx.run(
                "MATCH (d:Document)-[m:MENTIONS]->(e:Entity) WHERE d.id IN $ids "
                "RETURN d.id AS doc, e.id AS id, e.name AS name, e.label AS label, "
                "m.start AS start, m.end AS end, m.score AS score ORDER BY doc, start, id",
                ids=doc_ids,
            ))

        found: dict[str, list[Mention]] = {d: [] for d in doc_ids}
        for r in self._run(work, read=True):
            found[r["doc"]].append(Mention(r["name"], r["label"], r["start"], r["end"], r["score"]))
        return found

    def snapshot(self, doc_ids: list[str] | None = None) -> GraphSnapshot:
        def work(tx):
            return list(tx.run(
                "MATCH (d:Document)-[:MENTIONS]->(e:Entity) "
                "WHERE $ids IS NULL OR d.id IN $ids "
                "RETURN d.id AS doc, e.id AS id, e.name AS name, e.label AS label",
                ids=doc_ids,
            ))

        snap = GraphSnapshot(doc_entities={d: set() for d in doc_ids or []})
        for r in self._run(work, read=True):
            snap.entities[r["id"]] = (r["name"], r["label"])
            snap.doc_entities.setdefault(r["doc"], set()).add(r["id"])
        return snap

    def close(self) -> None:
        self.driver.close()


def open_graph_store(stores, data_dir: Path) -> GraphStore:
    """Neo4j when ``neo4j_uri`` is set, else the embedded SQLite file."""
    if stores.neo4j_uri:
        return Neo4jGraphStore(stores.neo4j_uri, stores.neo4j_user, stores.neo4j_password)
    return SqliteGraphStore(stores.graph_path or Path(data_dir) / "graph.sqlite")
