"""GraphIndexEngine with NetworkX over the embedded SQLite store, and the Neo4j adapter."""

from __future__ import annotations

import os

import pytest

from deployments.graph_index import GraphIndexEngine
from deployments.results import GraphEdge, GraphExpansion
from deployments.settings import StoreSettings
from deployments.stores import Mention, entity_id
from deployments.stores.graph_store import Neo4jGraphStore, SqliteGraphStore


def m(name: str, label: str, start: int = 0) -> Mention:
    return Mention(name, label, start, start + len(name), 0.9)


DOCS = {
    "d1": [m("Maria", "person"), m("Lisbon", "place", 10)],
    "d2": [m("Lisbon", "place"), m("Tom", "person", 8), m("Acme", "organization", 20)],
    "d3": [m("Tom", "person"), m("Denver", "place", 5)],
    "d4": [m("Zoe", "person")],
}


def open_engine(path) -> GraphIndexEngine:
    engine = GraphIndexEngine(StoreSettings(graph_path=path / "g.sqlite"), path, "cpu")
    engine.load()
    return engine


def ids(result: dict) -> dict[str, int]:
    return {e.id: e.hops for e in result.entities}


def test_expansion_by_hops_and_labels(tmp_path):
    engine = open_engine(tmp_path)
    engine.replace_documents(DOCS)
    maria, lisbon = entity_id("Maria", "person"), entity_id("Lisbon", "place")
    tom, denver = entity_id("Tom", "person"), entity_id("Denver", "place")
    assert ids(engine.expand(["d1"], 0)) == {maria: 0, lisbon: 0}
    one = engine.expand(["d1"], 1)
    assert ids(one)[tom] == 1 and denver not in ids(one)
    assert {r.id for r in one.related} == {"d2", "d3"}  # through Lisbon and Tom
    assert ids(engine.expand(["d1"], 2))[denver] == 2
    people = engine.expand(["d1"], 2, labels=["person"])
    assert set(ids(people)) == {maria, tom}
    assert GraphEdge(maria, lisbon, 1) in one.edges
    assert engine.expand(["unknown-doc"], 2) == GraphExpansion()
    with pytest.raises(ValueError):
        engine.expand(["d1"], 9)


def test_replace_is_idempotent_and_refresh_reads_other_writers(tmp_path):
    engine = open_engine(tmp_path)
    engine.replace_documents(DOCS)
    before = engine.expand(["d2"], 2)
    engine.replace_documents({"d2": DOCS["d2"]})
    assert engine.expand(["d2"], 2) == before
    # A second replica on the same store applies the first one's write on refresh.
    other = open_engine(tmp_path)
    engine.replace_documents({"d2": [m("Lisbon", "place")]})
    assert entity_id("Tom", "person") in ids(other.expand(["d2"], 0))
    other.refresh(["d2"])
    assert ids(other.expand(["d2"], 0)) == {entity_id("Lisbon", "place"): 0}
    assert other.info().entities >= 5 and other.info().documents == 4


def test_forgetting_a_document_forgets_entities_only_it_mentioned(tmp_path):
    engine = open_engine(tmp_path)
    other = open_engine(tmp_path)  # a second replica, told by refresh
    engine.replace_documents(DOCS)
    other.refresh(list(DOCS))
    maria, acme = entity_id("Maria", "person"), entity_id("Acme", "organization")
    engine.delete_documents(["d1", "d2"])
    other.refresh(["d1", "d2"])
    for replica in (engine, other):
        assert set(replica.entities) == {entity_id("Tom", "person"), entity_id("Denver", "place"),
                                         entity_id("Zoe", "person")}
        assert set(replica.doc_entities) == {"d3", "d4"}
        assert maria not in replica.entity_docs and acme not in replica.entity_docs
        assert replica.expand(["d3"], 3).related == []  # d2 no longer reached through Tom
    snap = engine.store.snapshot()
    assert set(snap.doc_entities) == {"d3", "d4"} and set(snap.entities) == set(engine.entities)
    rows = engine.store.db.execute("SELECT id FROM entities").fetchall()
    assert {r[0] for r in rows} == set(engine.entities)  # the store drops them too
    engine.delete_documents(["d1"])  # again: nothing to do
    assert set(engine.doc_entities) == {"d3", "d4"}


def test_sqlite_store_snapshot_is_exact(tmp_path):
    store = SqliteGraphStore(tmp_path / "g.sqlite")
    store.replace_document("d", [m("Paris", "place"), m("paris", "place", 30), m("Eve", "person")])
    snap = store.snapshot()
    assert snap.doc_entities == {"d": {entity_id("Paris", "place"), entity_id("Eve", "person")}}
    # Mentions read back carry their entity's name and label: the same entity ids again.
    found = store.mentions(["d", "absent"])
    paris, eve = entity_id("Paris", "place"), entity_id("Eve", "person")
    assert [(x.entity_id, x.start, x.end, x.score) for x in found["d"]] == [
        (eve, 0, 3, 0.9), (paris, 0, 5, 0.9), (paris, 30, 35, 0.9)]
    assert found["absent"] == []
    store.delete_document("d")
    assert store.snapshot(["d"]).doc_entities == {"d": set()}
    assert store.mentions(["d"]) == {"d": []}


@pytest.mark.skipif(not os.environ.get("NEO4J_URI"), reason="NEO4J_URI is not set: no Neo4j server to test against")
def test_neo4j_adapter_round_trip():
    store = Neo4jGraphStore(
        os.environ["NEO4J_URI"], os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", "")
    )
    doc = f"her-serve-test-{os.getpid()}"
    try:
        store.replace_document(doc, DOCS["d2"])
        store.replace_document(doc, DOCS["d2"])
        snap = store.snapshot([doc])
        assert snap.doc_entities[doc] == {x.entity_id for x in DOCS["d2"]}
        assert store.mentions([doc])[doc] == DOCS["d2"]
    finally:
        store.delete_document(doc)
    assert store.snapshot([doc]).doc_entities[doc] == set()
    store.close()
