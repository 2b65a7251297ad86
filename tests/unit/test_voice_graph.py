"""The voice graph's plain parts, without Ray."""

from __future__ import annotations

import pytest

from deployments.settings import LLMSettings, SpeechSettings
from graphs.voice import SentenceBuffer, TurnRefused, VoiceGraph


def test_sentences_leave_as_soon_as_they_are_complete():
    buf = SentenceBuffer()
    assert buf.feed("The train leaves at") == []
    assert buf.feed(" five. It stops") == ["The train leaves at five."]
    assert buf.feed(" at the airport. Bring a") == ["It stops at the airport."]
    assert buf.flush() == ["Bring a"]
    assert buf.flush() == []


def test_a_turn_without_an_llm_or_engine_is_refused_up_front():
    graph = VoiceGraph.func_or_class(LLMSettings(), SpeechSettings(), stt=None, tts={"piper": object()})
    with pytest.raises(TurnRefused, match="SERVE_LLM__URL"):
        graph.check("piper")
    configured = VoiceGraph.func_or_class(
        LLMSettings(url="http://127.0.0.1:9/v1"), SpeechSettings(), stt=None,
        tts_unavailable={"chatterbox": "weights absent"})
    with pytest.raises(TurnRefused, match="weights absent"):
        configured.check("chatterbox")
