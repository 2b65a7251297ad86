"""One call path per replica: every public method is wrapped; check_health probes the engine."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

from deployments import runtime
from deployments.piper import PIPER
from deployments.registry import MODELS
from deployments.settings import Settings


def replica_class(model):
    return model.deployment.func_or_class


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_public_method_of_every_replica_runs_through_the_wrapper(model):
    cls = replica_class(model)
    public = {name: fn for name, fn in inspect.getmembers(cls, inspect.isfunction)
              if not name.startswith("_") and name not in runtime.ModelReplica.LIFECYCLE}
    assert "info" in public and "check_health" in dir(cls)
    unwrapped = [name for name, fn in public.items() if not getattr(fn, "__replica_call__", False)]
    assert unwrapped == []


@pytest.fixture
def piper_replica():
    replica = replica_class(PIPER)(PIPER.engine, Settings(), "cpu")
    replica.last_ok = float("-inf")  # idle for long: the next check probes the engine
    return replica


def test_a_freshly_loaded_engine_is_not_probed_by_the_first_check():
    replica = replica_class(PIPER)(PIPER.engine, Settings(), "cpu")
    replica.engine.backend.voice = None  # a probe would fail now
    asyncio.run(replica.check_health())  # loading just proved the model


def errors_of(replica, monkeypatch) -> list[dict]:
    seen: list[dict] = []
    monkeypatch.setattr(replica.metrics.errors, "inc", lambda value=1, tags=None: seen.append(tags))
    return seen


def test_a_healthy_engine_passes_and_a_recent_answer_spares_the_probe(piper_replica):
    asyncio.run(piper_replica.check_health())
    assert piper_replica.last_ok > 0
    piper_replica.engine.backend.voice = None  # would fail a probe, but the last answer is recent
    asyncio.run(piper_replica.check_health())


def test_bookkeeping_calls_do_not_stand_in_for_the_engine(piper_replica):
    piper_replica.info()  # /v1/status asks every replica this often: it proves nothing
    piper_replica.engine.backend.voice = None
    with pytest.raises(AttributeError):
        asyncio.run(piper_replica.check_health())


def test_a_broken_engine_fails_check_health_and_its_calls_are_counted(piper_replica, monkeypatch):
    errors = errors_of(piper_replica, monkeypatch)
    piper_replica.engine.backend.voice = None  # the backend object is broken: synthesis fails
    with pytest.raises(AttributeError):
        asyncio.run(piper_replica.check_health())

    with pytest.raises(AttributeError):
        asyncio.run(piper_replica.synthesize(0, "Hello there."))
    assert errors == [{"method": "synthesize", "kind": "internal"}]


def test_an_engine_stuck_in_its_probe_fails_check_health(piper_replica, monkeypatch):
    monkeypatch.setattr(runtime, "HEALTH_PROBE_TIMEOUT_S", 0.2)
    release = asyncio.Event()

    def wedged():
        import time

        while not release.is_set():
            time.sleep(0.05)

    monkeypatch.setattr(piper_replica.engine, "probe", wedged)

    async def check_twice():
        try:
            for _ in range(2):  # the second check finds the first probe still running
                with pytest.raises(RuntimeError, match="has not answered a health probe"):
                    await piper_replica.check_health()
        finally:
            release.set()

    asyncio.run(check_twice())


def test_a_cuda_oom_in_any_method_is_a_503_error_for_that_call(piper_replica, monkeypatch):
    torch = pytest.importorskip("torch")
    errors = errors_of(piper_replica, monkeypatch)

    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(piper_replica.engine, "voices", out_of_memory)
    from deployments.metrics import GPUMemoryExceeded

    with pytest.raises(GPUMemoryExceeded, match="PiperTTS"):
        piper_replica.voices()
    assert errors == [{"method": "voices", "kind": "gpu_oom"}]
    assert piper_replica.info().model.startswith("piper-")


def test_cpu_tts_replica_computes_a_first_sentence_without_the_later_ones(piper_replica):
    """Each synthesis uses the replica's whole thread budget: sentences asked ahead wait for
    the first sentences computing when they arrive, not for first sentences asked later."""
    import threading
    import time

    engine = piper_replica.engine
    spans: dict[str, tuple[float, float]] = {}
    real = engine.synthesize
    lock = threading.Lock()

    def timed(sentence, *args):
        start = time.perf_counter()
        try:
            return real(sentence, *args)
        finally:
            with lock:
                spans[sentence.split()[0]] = (start, time.perf_counter())

    engine.synthesize = timed

    async def scenario():
        first = asyncio.ensure_future(piper_replica.synthesize(
            0, "First of a call, long enough that the others arrive while it computes, "
               "which on this engine takes well over the twenty milliseconds we wait."))
        await asyncio.sleep(0)  # the first sentence is computing
        ahead = [asyncio.ensure_future(piper_replica.synthesize(i, f"Ahead{i} of it."))
                 for i in (1, 2)]
        await asyncio.sleep(0.02)
        other = asyncio.ensure_future(piper_replica.synthesize(0, "Other caller's first."))
        return await asyncio.gather(first, *ahead, other)

    pieces = asyncio.run(scenario())
    assert [p.index for p in pieces] == [0, 1, 2, 0] and all(p.pcm for p in pieces)
    first_end = spans["First"][1]
    assert spans["Ahead1"][0] >= first_end and spans["Ahead2"][0] >= first_end  # they waited
    assert spans["Other"][0] < first_end  # two callers' first sentences run side by side


def test_replicas_that_load_together_probe_at_different_times():
    # A probe is a real inference; replicas of one node all load at once and would probe together.
    first, second = (replica_class(PIPER)(PIPER.engine, Settings(), "cpu") for _ in range(2))
    spread = runtime.HEALTH_PROBE_EVERY_S * (1 + runtime.HEALTH_PROBE_SPREAD)
    for replica in (first, second):
        assert runtime.HEALTH_PROBE_EVERY_S <= replica.probe_every_s <= spread
    assert first.probe_every_s != second.probe_every_s
    first.last_ok = time.monotonic() - first.probe_every_s + 5  # proof 5 s younger than its interval
    first.engine.backend.voice = None  # a probe would fail now
    asyncio.run(first.check_health())
