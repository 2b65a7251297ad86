"""EmbedCalls: concurrent requests to the Embedder leave together, and each gets its own answer.

The Embedder is the real replica class with the real MiniLM engine, called in
this process; only Ray's transport is replaced, by a handle that counts calls,
and the replica context ``@serve.batch`` reads its ``max_ongoing_requests`` from.
Every test here runs in the module's one event loop, as a replica's do.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from ray import serve

from deployments.embedding import EMBEDDER, EmbeddingEngine, MiniLMBackend
from deployments.runtime import CPU_THREADS_ENV
from deployments.settings import Settings
from graphs.embed_calls import MAX_MERGED, PIPELINED, EmbedCalls


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    pending = asyncio.all_tasks(loop)  # each replica's batch loop
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
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


def test_the_embedder_computes_on_lanes_of_its_own_one_torch_thread_each(monkeypatch, loop):
    # Torch on CPU keeps an OpenMP team per calling thread; two teams spin against each other.
    # Single-threaded lanes have none: two batches compute side by side, one core each.
    import torch

    monkeypatch.setenv(CPU_THREADS_ENV, "2")  # the replica's num_cpus
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=200))
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    calls: list[tuple[str, int, float, float]] = []  # thread, torch threads, start, end
    encode = MiniLMBackend.encode
    load = EmbeddingEngine.load

    def recording_load(self):
        calls.append((threading.current_thread().name, torch.get_num_threads(), 0.0, 0.0))
        load(self)

    def recording_encode(self, texts):
        start = time.perf_counter()
        result = encode(self, texts)
        calls.append((threading.current_thread().name, torch.get_num_threads(), start,
                      time.perf_counter()))
        return result

    monkeypatch.setattr(EmbeddingEngine, "load", recording_load)
    monkeypatch.setattr(MiniLMBackend, "encode", recording_encode)
    replica = EMBEDDER.deployment.func_or_class(EMBEDDER.engine, Settings(), "cpu")
    texts = [f"Reminder {i}: call the dentist on day {i}." for i in range(2 * MAX_MERGED)]

    async def run():
        await replica.embed(["one"])
        halves = texts[:MAX_MERGED], texts[MAX_MERGED:]
        both = await asyncio.gather(*(replica.embed_many([([t], False, None) for t in half])
                                      for half in halves))
        replica.last_ok = float("-inf")  # the next check probes the engine
        await replica.check_health()
        return [r for half in both for r in half]

    results = loop.run_until_complete(run())
    assert replica.lanes.count == 2
    assert len(calls) == 5  # load, one sentence, two batches, the probe
    assert all(name.startswith("engine") for name, *_ in calls)
    assert len({name for name, *_ in calls}) == 2
    assert {threads for _, threads, *_ in calls} == {1}
    (_, _, a0, a1), (_, _, b0, b1) = calls[2:4]
    assert a0 < b1 and b0 < a1  # the two batches computed at the same time
    alone = replica.engine.embed(texts).vectors
    assert np.allclose(np.concatenate([r.vectors for r in results]), alone, atol=1e-5)
