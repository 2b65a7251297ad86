"""ChatLLM against a fake OpenAI-compatible server: streaming and every failure mode."""

from __future__ import annotations

import asyncio
import time

import pytest

from graphs.llm import ChatLLM, LLMError, LLMSettings
from tests.fakes.llm_server import REPLY, FakeLLM


@pytest.fixture(scope="module")
def fake():
    with FakeLLM(slow_s=0.3) as server:
        yield server


def collect(llm: ChatLLM) -> str:
    async def run() -> str:
        return "".join([p async for p in llm.stream([{"role": "user", "content": "hi"}])])

    return asyncio.run(run())


def llm(fake: FakeLLM, model: str, **kw) -> ChatLLM:
    return ChatLLM(LLMSettings(url=fake.url, model=model, **kw))


def test_streams_the_reply(fake):
    assert collect(llm(fake, "fast")).split() == REPLY.split()
    assert fake.requests[-1]["stream"] is True


@pytest.mark.parametrize("model,kind", [("garbage", "bad_response"), ("die", "unreachable")])
def test_broken_endpoints_raise_llm_error(fake, model, kind):
    with pytest.raises(LLMError) as err:
        collect(llm(fake, model))
    assert err.value.kind == kind


def test_hanging_endpoint_times_out_quickly(fake):
    start = time.monotonic()
    with pytest.raises(LLMError, match="first token") as err:
        collect(llm(fake, "hang", first_token_timeout_s=1.0))
    assert err.value.kind == "timeout"
    assert time.monotonic() - start < 5


def test_slow_tokens_past_the_gap_deadline_fail(fake):
    with pytest.raises(LLMError, match="next token"):
        collect(llm(fake, "slow", token_timeout_s=0.1))


def test_unreachable_endpoint():
    with pytest.raises(LLMError) as err:
        collect(ChatLLM(LLMSettings(url="http://127.0.0.1:9/v1")))
    assert err.value.kind == "unreachable"
