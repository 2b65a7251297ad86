"""Concurrent callers of one Embedder deployment, merged into one handle call.

A handle hop costs the caller and the replica more CPU than one sentence's
share of a batched forward pass (docs/performance.md), so the gateway and the
retrieval graph do not send one call per request: requests that arrive while
a call is in flight leave together in the next one. There is no timer: a
request that finds no call in flight leaves at once. A second call leaves
beside one in flight only with half a batch or more (``PIPELINED``): it waits
in the Embedder's queue while the first computes, so the model never idles
between them, and it is worth a forward pass (one sentence alone costs the
model ~4x its share of a batch of 30). Smaller ones wait for the call in
flight. The Embedder still batches across its callers.

Not ``@serve.batch``: its queue belongs to the decorated function, one per
process, so two ``EmbedCalls`` (Embedder and BatchEmbedder in one gateway)
would share it.
"""

from __future__ import annotations

import asyncio

from ray.serve.handle import DeploymentHandle

from deployments.embedding import EmbedRequest
from deployments.results import Embeddings

MAX_MERGED = 32
"""Requests per handle call (each may hold many texts; the engine chunks them)."""
IN_FLIGHT = 2
"""Calls in flight at once: one computing, the next on its way."""
PIPELINED = MAX_MERGED // 2
"""Fewest requests a call takes to leave while another is in flight."""


class EmbedCalls:
    def __init__(self, handle: DeploymentHandle):
        self.handle = handle
        self.waiting: list[tuple[EmbedRequest, asyncio.Future]] = []
        self.in_flight: set[asyncio.Task] = set()

    async def embed(self, texts: list[str], is_query: bool = False,
                    dimensions: int | None = None) -> Embeddings:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(((texts, is_query, dimensions), future))
        self._send()
        result = await future
        if isinstance(result, ValueError):  # this request's own refusal (its dimensions)
            raise result
        return result

    def _send(self) -> None:
        """Send what waits (skipping callers that gave up): at once when no call is in
        flight, beside one in flight when ``PIPELINED`` requests or more wait."""
        while self.waiting and (not self.in_flight or (
                len(self.in_flight) < IN_FLIGHT and len(self.waiting) >= PIPELINED)):
            batch = [(r, f) for r, f in self.waiting[:MAX_MERGED] if not f.done()]
            del self.waiting[:MAX_MERGED]
            if batch:
                task = asyncio.ensure_future(self._call(batch))
                self.in_flight.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.in_flight.discard(task)
        self._send()

    async def _call(self, batch: list[tuple[EmbedRequest, asyncio.Future]]) -> None:
        try:
            results = await self.handle.embed_many.remote([request for request, _ in batch])
        except Exception as exc:  # the call failed: every request in it fails the same way
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
