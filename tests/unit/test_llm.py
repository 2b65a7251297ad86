"""The chat engine: the real embedded SmolLM2-135M, and the forwarding backend against a fake
server for the faults only a fake can produce (hanging, garbage, dying mid-stream)."""

from __future__ import annotations

import asyncio
import time

import pytest

from deployments.llm import (
    ChatEngine, ChatRequest, EmbeddedChat, ForwardedChat, LLMError, LLMTimeout, StopText,
    cpu_threads,
)
from deployments.settings import LLMSettings
from tests.fakes.llm_server import REPLY, FakeLLM

QUESTION = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Tell me about the moon and the stars in the sky."}]


def collect(engine, request: ChatRequest) -> list:
    async def run() -> list:
        return [chunk async for chunk in engine.stream(request)]

    return asyncio.run(run())


def text_of(chunks) -> str:
    return "".join(c.text for c in chunks)


@pytest.fixture(scope="module")
def smollm2() -> ChatEngine:
    engine = ChatEngine(LLMSettings(threads=2), "cpu")
    assert isinstance(engine.backend, EmbeddedChat)
    assert engine.availability().ok
    engine.load()
    return engine


def test_the_embedded_model_streams_its_reply_in_pieces(smollm2):
    import torch

    chunks = collect(smollm2, ChatRequest(QUESTION, max_tokens=40, temperature=0))
    pieces, last = chunks[:-1], chunks[-1]
    assert len(pieces) > 3 and all(c.text and c.finish_reason is None for c in pieces)
    assert len(text_of(pieces).split()) > 3
    assert last.text == "" and last.finish_reason in ("stop", "length")
    assert last.prompt_tokens > 10 and 0 < last.completion_tokens <= 40
    assert torch.get_num_threads() == 2
    info = smollm2.info()
    assert (info.model, info.backend, info.device) == ("SmolLM2-135M-Instruct", "EmbeddedChat", "cpu")
    smollm2.probe()  # the health check's tiny real request


def test_max_tokens_bounds_the_reply(smollm2):
    last = collect(smollm2, ChatRequest(QUESTION, max_tokens=5, temperature=0))[-1]
    assert last.completion_tokens == 5 and last.finish_reason == "length"


def test_sampling_with_a_temperature_works(smollm2):
    last = collect(smollm2, ChatRequest(QUESTION, max_tokens=8, temperature=0.8))[-1]
    assert 0 < last.completion_tokens <= 8


def test_a_stop_string_ends_the_reply_before_it(smollm2):
    full = text_of(collect(smollm2, ChatRequest(QUESTION, max_tokens=40, temperature=0)))
    words = full.split()
    assert len(words) > 6
    stop = words[5]  # greedy decoding repeats itself: the same reply up to this word
    expected = full[: full.index(stop)]
    chunks = collect(smollm2, ChatRequest(QUESTION, max_tokens=40, temperature=0, stop=(stop,)))
    assert text_of(chunks) == expected and stop not in text_of(chunks)
    assert chunks[-1].finish_reason == "stop"


def test_a_prompt_longer_than_the_context_is_refused(smollm2):
    with pytest.raises(ValueError, match="context"):
        collect(smollm2, ChatRequest(QUESTION, max_tokens=smollm2.backend.context_tokens,
                                     temperature=0))


def test_cancelling_the_caller_stops_generation(smollm2):
    """Serve cancels the replica's generator when its caller goes away or barges in."""
    steps = []
    hook = smollm2.backend.model.register_forward_hook(lambda *_: steps.append(1))

    async def run() -> None:
        got = asyncio.Event()

        async def consume() -> None:
            async for _ in smollm2.stream(ChatRequest(QUESTION, max_tokens=300, temperature=0)):
                got.set()

        task = asyncio.create_task(consume())
        await got.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
    finally:
        hook.remove()
    assert 0 < len(steps) < 30  # stopped within a few tokens, far from 300
    # The engine is free for the next caller.
    assert collect(smollm2, ChatRequest(QUESTION, max_tokens=3, temperature=0))[-1].completion_tokens == 3


def test_stop_text_holds_back_what_may_start_a_stop_string():
    cut = StopText(("END",))
    assert cut.feed("the cat E") == "the cat "
    assert cut.feed("N") == ""
    assert cut.feed("X more") == "ENX more"
    assert cut.feed(" then EN") == " then "
    assert cut.feed("D and on") == "" and cut.stopped
    assert StopText(()).feed("anything") == "anything"


def test_the_thread_budget_is_the_setting_or_every_core_outside_ray():
    import os

    assert cpu_threads(3) == 3
    assert cpu_threads(0) == os.cpu_count()


def test_the_url_or_the_gpu_profile_picks_the_forwarding_backend():
    assert isinstance(ChatEngine(LLMSettings(), "cpu").backend, EmbeddedChat)
    gpu = ChatEngine(LLMSettings(), "gpu").backend
    assert isinstance(gpu, ForwardedChat) and gpu.url == LLMSettings().gpu_url
    url = ChatEngine(LLMSettings(url="http://llm:9/v1"), "cpu").backend
    assert isinstance(url, ForwardedChat) and url.url == "http://llm:9/v1"


# The forwarding backend: the fake server alone can hang, send garbage or die mid-stream.

@pytest.fixture(scope="module")
def fake():
    with FakeLLM(slow_s=0.3) as server:
        yield server


def forwarded(url: str, model: str = "fast", **kw) -> ChatEngine:
    engine = ChatEngine(LLMSettings(url=url, model=model, **kw), "cpu")
    engine.load()
    return engine


ASK = ChatRequest([{"role": "user", "content": "hi"}], max_tokens=50, temperature=0.2, stop=("zz",))


def test_forwarding_streams_the_servers_reply(fake):
    chunks = collect(forwarded(fake.url), ASK)
    assert text_of(chunks).split() == REPLY.split() and chunks[-1].finish_reason == "stop"
    sent = fake.requests[-1]
    assert sent["stream"] is True and sent["max_tokens"] == 50 and sent["stop"] == ["zz"]
    assert sent["temperature"] == 0.2 and sent["stream_options"] == {"include_usage": True}


def test_one_connection_pool_serves_every_request(fake):
    engine = forwarded(fake.url)
    client = engine.backend.client

    async def reply() -> str:
        return "".join([c.text async for c in engine.stream(ASK)])

    async def twice() -> list[str]:
        return [await reply(), await reply()]

    replies = asyncio.run(twice())
    assert all(r.split() == REPLY.split() for r in replies)
    assert engine.backend.client is client


@pytest.mark.parametrize("model,kind", [("garbage", "bad_response"), ("die", "unreachable")])
def test_a_broken_server_raises_llm_error(fake, model, kind):
    with pytest.raises(LLMError) as err:
        collect(forwarded(fake.url, model), ASK)
    assert err.value.kind == kind


def test_a_hanging_server_times_out_on_the_first_token(fake):
    start = time.monotonic()
    with pytest.raises(LLMError, match="first token") as err:
        collect(forwarded(fake.url, "hang", first_token_timeout_s=1.0), ASK)
    assert err.value.kind == "timeout"
    assert time.monotonic() - start < 10  # never a hang


def test_slow_tokens_past_the_gap_deadline_fail(fake):
    with pytest.raises(LLMError, match="next token"):
        collect(forwarded(fake.url, "slow", token_timeout_s=0.1), ASK)


def test_an_unreachable_server():
    with pytest.raises(LLMError) as err:
        collect(forwarded("http://127.0.0.1:9/v1"), ASK)
    assert err.value.kind == "unreachable"


def test_llm_error_keeps_its_kind_across_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(LLMTimeout("too slow")))
    assert isinstance(err, LLMError) and (err.message, err.kind, str(err)) == (
        "too slow", "timeout", "too slow")
