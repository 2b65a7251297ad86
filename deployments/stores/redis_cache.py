"""Redis: the embedding cache (by model and text hash) and the index-refresh channel.

Neither is durable state: when Redis is down, embeddings are recomputed and
ingest tells the index replicas directly (see docs/retrieval.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator

import numpy as np

log = logging.getLogger("ray.serve")


class RedisCache:
    def __init__(self, url: str, prefix: str, ttl_s: int):
        import redis.asyncio as aioredis

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

    async def publish(self, event: dict) -> int:
        """Send a refresh event; returns how many subscribers got it. Raises if Redis is down."""
        return int(await self.redis.publish(self.channel, json.dumps(event)))

    async def events(self) -> AsyncIterator[dict]:
        """Refresh events as they arrive (reconnecting is the caller's job)."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield json.loads(message["data"])
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        await self.redis.aclose()
