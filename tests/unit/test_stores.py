"""PostgreSQL (migrations, transactional writes) and Redis (cache, refresh events), for real."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.stores import DocumentRecord, Mention, StoreUnavailable
from deployments.stores.postgres import MIGRATIONS, PostgresStore, migrate
from deployments.stores.redis_cache import RedisCache, embed_with_cache

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the same loop as the async fixtures


@pytest.fixture
async def pg(store_env):
    store = PostgresStore(store_env["SERVE_STORES__POSTGRES_URL"])
    await store.connect()
    async with store.pool.acquire() as conn:
        await conn.execute("TRUNCATE documents, entities, mentions")
    yield store
    await store.close()


def doc(i: str, text: str, *mentions: Mention) -> DocumentRecord:
    return DocumentRecord(i, text, {"source": "test"}, list(mentions))


async def test_migrations_apply_once(pg):
    async with pg.pool.acquire() as conn:
        assert await migrate(conn) == []  # connect() already applied them
        names = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")]
    assert names == sorted(p.name for p in MIGRATIONS.glob("*.sql"))


async def test_write_commits_only_when_the_block_succeeds(pg):
    paris = Mention("Paris", "place", 0, 5, 0.8)
    async with pg.write([doc("a", "Paris in spring", paris)], "m", True):
        pass
    assert (await pg.stored_hashes(["a", "b"])) == {"a": doc("a", "Paris in spring").content_hash}
    with pytest.raises(RuntimeError):
        async with pg.write([doc("b", "never stored")], "m", True):
            raise RuntimeError("Qdrant failed")
    assert "b" not in await pg.stored_hashes(["b"])
    # Re-writing a document replaces its mentions instead of adding to them.
    async with pg.write([doc("a", "Paris in spring", paris)], "m", True):
        pass
    async with pg.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM mentions") == 1


async def entity_ids(pg) -> set[str]:
    async with pg.pool.acquire() as conn:
        return {r["id"] for r in await conn.fetch("SELECT id FROM entities")}


async def test_delete_drops_mentions_and_entities_no_one_mentions(pg):
    paris, lyon = Mention("Paris", "place", 0, 5, 0.8), Mention("Lyon", "place", 10, 14, 0.8)
    async with pg.write([doc("a", "Paris and Lyon", paris, lyon), doc("b", "Paris again", paris)],
                        "m", True):
        pass
    with pytest.raises(RuntimeError):  # a failure in the block: nothing is deleted
        async with pg.delete(["a"]):
            raise RuntimeError("Qdrant failed")
    assert set(await pg.stored_hashes(["a", "b"])) == {"a", "b"}
    async with pg.delete(["a", "absent"]) as stored:
        assert stored == {"a": ("Paris and Lyon", "m")}
    assert set(await pg.stored_hashes(["a", "b"])) == {"b"}
    assert await entity_ids(pg) == {paris.entity_id}  # Lyon was only in "a"
    async with pg.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM mentions WHERE document_id = 'a'") == 0
    async with pg.delete(["a"]) as stored:  # again: nothing there, nothing to do
        assert stored == {}
    # Re-writing a document without a mention drops the entity no one mentions any more.
    async with pg.write([doc("b", "Nothing here")], "m", True):
        pass
    assert await entity_ids(pg) == set()


async def test_unreachable_postgres_is_store_unavailable():
    with pytest.raises(StoreUnavailable, match="postgresql"):
        await PostgresStore("postgresql://postgres@127.0.0.1:1/none").connect()


async def test_redis_embedding_cache_and_refresh_events(store_env):
    cache = RedisCache(store_env["SERVE_STORES__REDIS_URL"], store_env["SERVE_STORES__REDIS_PREFIX"] + "-unit", 60)
    vec = np.arange(4, dtype=np.float32)[None, :]
    await cache.put_embeddings("m", ["hello"], vec)
    got = await cache.get_embeddings("m", ["hello", "absent"])
    assert np.array_equal(got[0], vec[0]) and got[1] is None
    assert (await cache.get_embeddings("other-model", ["hello"])) == [None]

    async def first_event():
        async for event in cache.events():
            return event

    listener = asyncio.create_task(first_event())
    for _ in range(50):  # wait until the subscription is live
        if await cache.redis.pubsub_numsub(cache.channel) != [(cache.channel.encode(), 0)]:
            break
        await asyncio.sleep(0.05)
    assert await cache.publish({"ids": ["x"]}) == 1
    assert await asyncio.wait_for(listener, 5) == {"ids": ["x"]}
    assert await cache.forget_embeddings([("m", "hello"), ("m", "never cached")])
    assert await cache.get_embeddings("m", ["hello"]) == [None]
    await cache.close()


async def test_unreachable_redis_means_cache_misses_not_errors():
    cache = RedisCache("redis://127.0.0.1:1/0", "x", 60)
    assert await cache.get_embeddings("m", ["a"]) == [None]
    await cache.put_embeddings("m", ["a"], np.ones((1, 2), np.float32))
    assert not await cache.forget_embeddings([("m", "a")])
    with pytest.raises(Exception):
        await cache.publish({"ids": []})


async def test_embed_with_cache_computes_only_misses(store_env):
    """Ingest's embedding path: a second pass over the same texts computes nothing."""
    from deployments.embedding import EmbeddingEngine
    from deployments.settings import EmbeddingSettings

    engine = EmbeddingEngine(EmbeddingSettings(), "cpu")
    engine.load()
    computed: list[str] = []

    async def compute(texts: list[str]) -> np.ndarray:
        computed.extend(texts)
        return engine.embed(texts).vectors

    cache = RedisCache(store_env["SERVE_STORES__REDIS_URL"], store_env["SERVE_STORES__REDIS_PREFIX"] + "-unit", 60)
    texts = ["the cat sleeps in the shed", "the train to Paris was late"]
    first = await embed_with_cache(cache, "minilm", texts, compute)
    again = await embed_with_cache(cache, "minilm", texts + ["a new sentence"], compute)
    assert computed == texts + ["a new sentence"]
    assert np.allclose(first, again[:2]) and again.shape == (3, 384)
    without_redis = await embed_with_cache(None, "minilm", texts[:1], compute)
    assert np.allclose(without_redis[0], first[0], atol=1e-6)  # a batch of one vs two: float noise
    await cache.redis.delete(*[cache.key("minilm", t) for t in texts + ["a new sentence"]])
    await cache.close()
