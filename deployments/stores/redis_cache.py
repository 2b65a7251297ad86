"""Redis: the embedding cache (by model and text hash) and the index-refresh channel.

Neither is durable state: when Redis is down, embeddings are recomputed and
ingest tells the index replicas directly (see docs/retrieval.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np

from deployments.settings import StoreSettings

log = logging.getLogger("ray.serve")


class RedisCache:
    def __init__(self, url: str, prefix: str, ttl_s: int):
        import redis.asyncio as aioredis

        self.url = url
        self.redis = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.channel = f"{prefix}:index-refresh"

    def key(self, model: str, text: str) -> str:
        return f"{self.prefix}:emb:{model}:{hashlib.sha256(text.encode()).hexdigest()}"

    async def get_embeddings(self, model: str, texts: list[str]) -> list[np.ndarray | None]:
        """Cached float32 vectors, None where absent (or Redis unreachable)."""
        import redis.exceptions

        try:
            raw = await self.redis.mget([self.key(model, t) for t in texts])
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("embedding cache unavailable, recomputing: %s", exc)
            return [None] * len(texts)
        return [np.frombuffer(r, dtype=np.float32) if r else None for r in raw]

    async def put_embeddings(self, model: str, texts: list[str], vectors: np.ndarray) -> None:
        import redis.exceptions

        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for t, v in zip(texts, vectors):
                    pipe.set(self.key(model, t), np.asarray(v, np.float32).tobytes(), ex=self.ttl_s)
                await pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("embedding cache not updated: %s", exc)

    async def forget_embeddings(self, entries: list[tuple[str, str]]) -> bool:
        """Delete the cached vectors of these (model, text) pairs; False if Redis was
        unreachable (the entries then expire with their TTL)."""
        import redis.exceptions

        if not entries:
            return True
        try:
            await self.redis.delete(*{self.key(model, text) for model, text in entries})
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("embedding cache entries of forgotten documents not deleted: %s", exc)
            return False
        return True

    async def publish(self, event: dict) -> int:
        """Send a refresh event; returns how many subscribers got it. Raises if Redis is down."""
        return int(await self.redis.publish(self.channel, json.dumps(event)))

    async def events(self) -> AsyncIterator[dict]:
        """Refresh events as they arrive (reconnecting is the caller's job).

        Its own connection, without the read timeout: a quiet channel is normal.
        """
        import redis.asyncio as aioredis

        listener = aioredis.from_url(self.url, socket_connect_timeout=2, health_check_interval=10)
        pubsub = listener.pubsub()
        await pubsub.subscribe(self.channel)
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield json.loads(message["data"])
        finally:
            await pubsub.aclose()
            await listener.aclose()

    async def close(self) -> None:
        await self.redis.aclose()


async def embed_with_cache(
    cache: RedisCache | None,
    model: str,
    texts: list[str],
    compute: Callable[[list[str]], Awaitable[np.ndarray]],
) -> np.ndarray:
    """Vectors for ``texts``: cached ones from Redis, the rest computed and then cached."""
    found = await cache.get_embeddings(model, texts) if cache else [None] * len(texts)
    missing = [i for i, v in enumerate(found) if v is None]
    if missing:
        fresh = await compute([texts[i] for i in missing])
        for i, v in zip(missing, fresh):
            found[i] = v
        if cache:
            await cache.put_embeddings(model, [texts[i] for i in missing], fresh)
    return np.stack(found).astype(np.float32)


class IndexRefresher:
    """Keeps a replica's index current: follows the Redis refresh channel in the background."""

    def __init__(self, engine, stores: StoreSettings, kind: str):
        """``engine.refresh(ids)`` re-reads those documents from the source of truth."""
        self.engine = engine
        self.kind = kind
        self.stores = stores
        self.task: asyncio.Task | None = None
        if stores.redis_url:
            self.task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        cache = RedisCache(self.stores.redis_url, self.stores.redis_prefix, 0)
        while True:
            try:
                async for event in cache.events():
                    await asyncio.to_thread(self.engine.refresh, event["ids"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: ingest falls back to direct calls
                log.warning("%s refresh channel lost (%s); retrying in 2 s", self.kind, exc)
                await asyncio.sleep(2)
