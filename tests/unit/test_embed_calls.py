"""EmbedCalls: concurrent requests to the Embedder leave together, and each gets its own answer.

The Embedder is the real replica class with the real MiniLM engine, called in
this process; only Ray's transport is replaced, by a handle that counts calls,
and the replica context ``@serve.batch`` reads its ``max_ongoing_requests`` from.
``@serve.batch`` binds its queue to the first event loop it runs on (one queue
per process), so every test here runs in the module's one loop.
"""

from __future__ import annotations

import asyncio
import math
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from ray import serve

from deployments.embedding import EMBEDDER, EmbeddingEngine, MiniLMBackend
from deployments.settings import Settings
from graphs.embed_calls import MAX_MERGED, PIPELINED, EmbedCalls


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


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


def test_merged_calls_give_each_request_its_own_answer_and_refusal(monkeypatch, loop):
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

    calls, results, (fine, bad, also) = loop.run_until_complete(run())
    # No timer: the first request leaves alone, the next PIPELINED beside it, and the rest
    # gather behind them; no call but the first and the last is smaller than PIPELINED.
    assert {m for m, _ in calls} == {"embed_many"}
    sizes = [n for _, n in calls]
    assert sizes[:2] == [1, PIPELINED]
    assert sum(sizes) == len(texts) and max(sizes) == MAX_MERGED
    assert min(sizes[1:-1]) >= PIPELINED
    assert len(calls) == 2 + math.ceil((len(texts) - 1 - PIPELINED) / MAX_MERGED)
    alone = replica.engine.embed(texts, is_query=True).vectors
    for i, result in enumerate(results):
        assert result.vectors.shape == (1, alone.shape[1])
        assert np.allclose(result.vectors[0], alone[i], atol=1e-5)
    assert isinstance(bad, ValueError) and "fixed dimensions" in str(bad)
    assert fine.vectors.shape[0] == 1 and also.vectors.shape[0] == 1


def test_the_embedder_loads_embeds_and_probes_on_one_thread_of_its_own(monkeypatch, loop):
    # Torch on CPU keeps an OpenMP team per calling thread; two teams spin against each other.
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=200))
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    threads: list[str] = []
    encode = MiniLMBackend.encode
    load = EmbeddingEngine.load

    def recording_load(self):
        threads.append(threading.current_thread().name)
        load(self)

    def recording_encode(self, texts):
        threads.append(threading.current_thread().name)
        return encode(self, texts)

    monkeypatch.setattr(EmbeddingEngine, "load", recording_load)
    monkeypatch.setattr(MiniLMBackend, "encode", recording_encode)
    replica = EMBEDDER.deployment.func_or_class(EMBEDDER.engine, Settings(), "cpu")
    replica.last_ok = float("-inf")  # the next check probes the engine

    async def run():
        await replica.embed(["one"])
        await replica.embed_many([(["two"], False, None), (["three"], True, None)])
        await replica.check_health()

    loop.run_until_complete(run())
    assert len(threads) == 4  # load, two batches, the probe
    assert len(set(threads)) == 1 and threads[0] != threading.main_thread().name
