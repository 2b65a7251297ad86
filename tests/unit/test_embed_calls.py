"""EmbedCalls: concurrent requests to the Embedder leave together, and each gets its own answer.

The Embedder is the real replica class with the real MiniLM engine, called in
this process; only Ray's transport is replaced, by a handle that counts calls,
and the replica context ``@serve.batch`` reads its ``max_ongoing_requests`` from.
``@serve.batch`` binds its queue to the first event loop it runs on, so
everything here runs in one.
"""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import numpy as np
from ray import serve

from deployments.embedding import EMBEDDER
from deployments.settings import Settings
from graphs.embed_calls import IN_FLIGHT, MAX_MERGED, EmbedCalls


class CountingHandle:
    """A DeploymentHandle's ``method.remote(...)`` on a replica object in this process."""

    def __init__(self, replica):
        self.replica = replica
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, method: str):
        handle = self

        class Method:
            @staticmethod
            async def remote(*args):
                handle.calls.append((method, len(args[0])))
                return await getattr(handle.replica, method)(*args)

        return Method


def test_merged_calls_give_each_request_its_own_answer_and_refusal(monkeypatch):
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=200))
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    replica = EMBEDDER.deployment.func_or_class(EMBEDDER.engine, Settings(), "cpu")
    texts = [f"Reminder {i}: call the dentist on day {i}." for i in range(3 * MAX_MERGED)]

    async def run():
        many = CountingHandle(replica)
        shared = EmbedCalls(many)
        results = await asyncio.gather(*(shared.embed([t], is_query=True) for t in texts))
        calls = EmbedCalls(CountingHandle(replica))
        refused = await asyncio.gather(calls.embed(["fine"]), calls.embed(["bad"], dimensions=100),
                                       calls.embed(["also fine"]), return_exceptions=True)
        return many.calls, results, refused

    calls, results, (fine, bad, also) = asyncio.run(run())
    # No timer: the first IN_FLIGHT requests leave alone, the rest gather behind them.
    assert {m for m, _ in calls} == {"embed_many"}
    assert len(calls) == IN_FLIGHT + math.ceil((len(texts) - IN_FLIGHT) / MAX_MERGED)
    assert max(n for _, n in calls) == MAX_MERGED
    alone = replica.engine.embed(texts, is_query=True).vectors
    for i, result in enumerate(results):
        assert result.vectors.shape == (1, alone.shape[1])
        assert np.allclose(result.vectors[0], alone[i], atol=1e-5)
    assert isinstance(bad, ValueError) and "fixed dimensions" in str(bad)
    assert fine.vectors.shape[0] == 1 and also.vectors.shape[0] == 1
