"""PostgreSQL or Redis off the network while the shared cluster serves, and a commit that
fails on the server: ingest and forgetting answer 503 and leave nothing half-done, the
rest serves.

The stores are real; only the network in front of them is a fake (``store_proxies``,
tests/fakes/tcp_proxy.py). Every ``cut()`` brings its store back in a finally.
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import redis

from deployments import audio
from deployments.stores import DocumentRecord

SPOKEN = "When does the train to the city leave tonight?"


def ingest(api, *docs: dict):
    return api.post("/v1/ingest", json={"documents": list(docs)})


def retrieved(api, query: str, k: int = 10) -> dict[str, dict]:
    r = api.post("/v1/retrieve", json={"query": query, "k": k})
    assert r.status_code == 200, r.text
    return {hit["id"]: hit for hit in r.json()["results"]}


def assert_store_unavailable(response, store: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("unavailable", "store_unavailable")
    assert store in error["message"] and response.headers["Retry-After"] == "5"


def stored_hash(store_env, doc_id: str) -> str | None:
    async def read() -> str | None:
        conn = await asyncpg.connect(store_env["SERVE_STORES__POSTGRES_URL"])
        try:
            return await conn.fetchval("SELECT content_hash FROM documents WHERE id = $1", doc_id)
        finally:
            await conn.close()

    return asyncio.run(read())


def content_hash(doc: dict) -> str:
    return DocumentRecord(doc["id"], doc["text"], {**doc["metadata"], "kind": "document"}).content_hash


def assert_the_rest_serves(api) -> None:
    """Speech, transcription, embeddings and a voice turn with retrieval: no store on their path."""
    speech = api.post("/v1/audio/speech", json={
        "model": "piper", "voice": "en_US-joe-medium", "input": SPOKEN, "response_format": "wav"})
    assert speech.status_code == 200, speech.text
    assert audio.decode(speech.content).seconds > 1
    heard = api.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                     files={"file": ("q.wav", speech.content, "audio/wav")})
    assert heard.status_code == 200 and "train" in heard.json()["text"].lower(), heard.text
    embedded = api.post("/v1/embeddings", json={"input": ["still embedding"]})
    assert embedded.status_code == 200 and len(embedded.json()["data"][0]["embedding"]) == 384
    turn = api.post("/v1/voice/turn", data={
        "engine": "piper", "retrieve": "true", "system_prompt": "[fake:fast]"},
        files={"file": ("q.wav", speech.content, "audio/wav")})
    assert turn.status_code == 200, turn.text
    kinds = [json.loads(line)["type"] for line in turn.text.splitlines() if line]
    assert kinds[:2] == ["transcript", "context"] and "audio" in kinds and "error" not in kinds
    assert kinds[-1] == "done"


def test_postgres_down_ingest_is_503_and_writes_nothing(api, store_proxies, store_env, vector_index):
    doc = {"id": "outage-pg", "metadata": {"source": "outage"},
           "text": "A glassblower in Murano shaped a blue heron from molten glass."}
    before = {"id": "outage-pg-before", "metadata": {}, "text": "The ferry to the island runs hourly."}
    assert ingest(api, before).status_code == 200  # ingest's connection pool is open
    with store_proxies.postgres.cut():
        assert_store_unavailable(ingest(api, doc), "postgresql")
        assert doc["id"] not in retrieved(api, "glassblower heron molten glass")
        assert vector_index.fetch.remote([doc["id"]]).result() == []
        assert_the_rest_serves(api)
    assert stored_hash(store_env, doc["id"]) is None
    r = ingest(api, doc)  # the pool's connections were cut: it opens new ones
    assert r.status_code == 200 and r.json()["written"] == [doc["id"]], r.text
    assert doc["id"] in retrieved(api, "glassblower heron molten glass", k=3)
    assert stored_hash(store_env, doc["id"]) == content_hash(doc)


def test_redis_down_ingest_tells_replicas_directly(api, store_proxies, store_env):
    channel = f"{store_env['SERVE_STORES__REDIS_PREFIX']}:index-refresh"
    server = redis.Redis(*store_proxies.redis.target)  # the real server, not through the proxy

    def subscribers() -> int:
        return server.pubsub_numsub(channel)[0][1]

    wait_for(lambda: subscribers() == 2)  # the VectorIndex and GraphIndex replicas follow it
    doc = {"id": "outage-redis", "metadata": {},
           "text": "The lighthouse keeper rowed to the island at dawn."}
    with store_proxies.redis.cut():
        wait_for(lambda: subscribers() == 0)
        r = ingest(api, doc)
        assert r.status_code == 200 and r.json()["written"] == [doc["id"]], r.text
        assert r.json()["refresh"] == "direct"
        assert doc["id"] in retrieved(api, "lighthouse keeper island", k=3)
        assert_the_rest_serves(api)
    wait_for(lambda: subscribers() == 2)  # the replicas retry every 2 s
    after = {"id": "outage-redis-after", "metadata": {},
             "text": "A heron stood in the reeds by the mill pond."}
    r = ingest(api, after)
    assert r.status_code == 200 and r.json()["refresh"] == "redis", r.text
    assert after["id"] in retrieved(api, "heron reeds mill pond", k=3)


def test_a_failed_commit_leaves_the_stored_version(api, store_env, die_at_commit, vector_index):
    v1 = {"id": "outage-commit", "metadata": {"v": 1},
          "text": "The beekeeper moved her hives to the orchard in April."}
    v2 = {**v1, "metadata": {"v": 2},
          "text": "The beekeeper sold all of her hives to a farmer in the valley."}
    assert ingest(api, v1).json()["written"] == [v1["id"]]

    failing = {**v2, "metadata": {**v2["metadata"], die_at_commit: True}}
    assert_store_unavailable(ingest(api, failing), "postgresql")
    hit = retrieved(api, "beekeeper hives farmer valley", k=3)[v1["id"]]
    assert hit["text"] == v1["text"] and hit["metadata"] == {"v": 1, "kind": "document"}
    [(_, _, payload)] = vector_index.fetch.remote([v1["id"]]).result()
    assert payload["text"] == v1["text"] and payload["content_hash"] == content_hash(v1)
    assert stored_hash(store_env, v1["id"]) == content_hash(v1)

    r = ingest(api, v2)
    assert r.status_code == 200 and r.json()["written"] == [v1["id"]], r.text
    assert retrieved(api, "beekeeper hives farmer valley", k=3)[v1["id"]]["text"] == v2["text"]
    assert stored_hash(store_env, v1["id"]) == content_hash(v2)


STORED = {"postgresql", "qdrant", "redis"}  # no NER on the test cluster: no graph mentions


def forget(api, doc_id: str):
    return api.delete(f"/v1/documents/{doc_id}")


def test_postgres_down_forget_is_503_and_deletes_nothing(api, store_proxies, stores_holding):
    doc = {"id": "outage-forget-pg", "metadata": {},
           "text": "The clockmaker of Prague oiled the gears of the astronomical dial."}
    assert ingest(api, doc).status_code == 200
    with store_proxies.postgres.cut():
        assert_store_unavailable(forget(api, doc["id"]), "postgresql")
        bulk = api.post("/v1/documents/delete", json={"ids": [doc["id"], "outage-other"]})
        assert_store_unavailable(bulk, "postgresql")
        assert doc["id"] in retrieved(api, "clockmaker astronomical dial gears", k=3)
    assert stores_holding(doc["id"], doc["text"]) == STORED
    r = forget(api, doc["id"])  # the pool opens new connections
    assert r.status_code == 200 and r.json()["deleted"] is True, r.text
    assert stores_holding(doc["id"], doc["text"]) == set()


def test_a_failed_forget_commit_leaves_the_document_everywhere(api, stores_holding, die_at_delete):
    doc = {"id": "outage-forget-commit", "metadata": {die_at_delete: True},
           "text": "The cartographer inked a sea serpent in the corner of the map."}
    assert ingest(api, doc).status_code == 200
    # PostgreSQL drops the connection at COMMIT, after Qdrant and the graph were deleted from.
    assert_store_unavailable(forget(api, doc["id"]), "postgresql")
    assert doc["id"] in retrieved(api, "cartographer sea serpent map", k=3)
    assert stores_holding(doc["id"], doc["text"]) == STORED


def test_redis_down_forget_still_succeeds(api, store_proxies, stores_holding):
    doc = {"id": "outage-forget-redis", "metadata": {},
           "text": "A falconer trained a young kestrel on the castle walls."}
    assert ingest(api, doc).status_code == 200
    with store_proxies.redis.cut():
        r = forget(api, doc["id"])  # the refresh goes to the index replicas directly
        assert r.status_code == 200 and r.json()["deleted"] is True, r.text
        assert doc["id"] not in retrieved(api, "falconer kestrel castle walls")
    # Only the cache entry, which could not be deleted, is left; it expires with its TTL.
    assert stores_holding(doc["id"], doc["text"]) == {"redis"}


def wait_for(condition, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
