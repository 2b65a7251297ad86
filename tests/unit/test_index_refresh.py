"""Index replicas follow ingest through the Redis refresh channel, without a restart."""

from __future__ import annotations

import asyncio

import pytest

from deployments.graph_index import GraphIndexEngine
from deployments.settings import StoreSettings
from deployments.stores import Mention, entity_id
from deployments.stores.redis_cache import IndexRefresher, RedisCache

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_follower_replica_applies_published_writes(tmp_path, store_env):
    stores = StoreSettings(
        graph_path=tmp_path / "g.sqlite",
        redis_url=store_env["SERVE_STORES__REDIS_URL"],
        redis_prefix=store_env["SERVE_STORES__REDIS_PREFIX"] + "-refresh",
    )
    writer, follower = GraphIndexEngine(stores, tmp_path, "cpu"), GraphIndexEngine(stores, tmp_path, "cpu")
    writer.load()
    follower.load()
    refresher = IndexRefresher(follower, stores, "graph")
    cache = RedisCache(stores.redis_url, stores.redis_prefix, 60)
    try:
        for _ in range(100):  # until the follower's subscription is live
            if (await cache.redis.pubsub_numsub(cache.channel))[0][1]:
                break
            await asyncio.sleep(0.05)
        writer.replace_documents({"d": [Mention("Ada", "person", 0, 3, 0.9), Mention("Turin", "place", 8, 13, 0.8)]})
        assert follower.expand(["d"], 1).entities == []
        assert await cache.publish({"ids": ["d"]}) == 1
        for _ in range(100):
            if follower.expand(["d"], 1).entities:
                break
            await asyncio.sleep(0.05)
        found = {e.id for e in follower.expand(["d"], 1).entities}
        assert found == {entity_id("Ada", "person"), entity_id("Turin", "place")}
    finally:
        refresher.task.cancel()
        await cache.close()
