"""/v1/voice/turn on the real cluster: real Whisper base, the embedded SmolLM2 and Piper.

The faults only a fake LLM server can produce (hanging, garbage) are in
tests/unit/test_voice_graph.py, against the forwarding backend."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from tests.integration.test_observability import wait_for_samples
from tests.speechkit import espeak_wav, normalize

QUESTION = "When does the train to the city leave tonight?"
STORY = "Tell me a long story about a dragon and a princess."
"""A request that makes SmolLM2 write for longer than a barge-in takes to arrive (greedy:
the cluster's voice replies use temperature 0, so the same question gives the same answer)."""


@pytest.fixture(scope="module")
def utterance() -> bytes:
    return espeak_wav(QUESTION, rate=16_000)


@pytest.fixture(scope="module")
def story() -> bytes:
    return espeak_wav(STORY, rate=16_000)


def turn(serve_cluster, audio: bytes, **fields):
    """Open a streamed turn; yields (arrival time, frame)."""
    data = {"engine": "piper", "output_sample_rate": "16000", **fields}
    with httpx.Client(base_url=serve_cluster.base_url, headers=serve_cluster.headers(),
                      timeout=60) as client:
        with client.stream("POST", "/v1/voice/turn", data=data,
                           files={"file": ("q.wav", audio, "audio/wav")}) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("application/x-ndjson")
            for line in r.iter_lines():
                if line:
                    yield time.monotonic(), json.loads(line)


def test_silence_is_answered_with_nothing(serve_cluster):
    """No speech (VAD): an empty transcript, then done; no LLM reply, no audio."""
    silence = b"\x00\x00" * 16_000 * 5
    frames = [f for _, f in turn(serve_cluster, silence, sample_rate="16000")]
    assert [f["type"] for f in frames] == ["transcript", "done"], frames
    assert frames[0]["text"] == "" and frames[1]["reply"] == "" and frames[1]["samples_sent"] == 0
    assert "llm_first_token" not in frames[1]["timings_ms"]


LONG_ANSWER = "You are a storyteller. Answer with a long story of many short sentences."


def test_a_spoken_question_gets_a_spoken_answer(serve_cluster, utterance):
    """Real Whisper base, the embedded SmolLM2 and Piper, end to end."""
    frames = [f for _, f in turn(serve_cluster, utterance, conversation_id="call-1")]
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "transcript" and kinds[-1] == "done" and "error" not in kinds, kinds
    assert {"train", "city"} <= set(normalize(frames[0]["text"]))
    audio = [f for f in frames if f["type"] == "audio"]
    assert audio
    for f in audio:
        assert len(base64.b64decode(f["audio"])) == 2 * f["samples"] > 16_000 // 4
        assert f["sample_rate"] == 16_000 and f["text"].strip()
    done = frames[-1]
    assert done["reply"] and done["cancelled"] is False
    assert " ".join(f["text"] for f in audio).split() == done["reply"].split()
    assert done["samples_sent"] == sum(f["samples"] for f in audio)
    stages = done["timings_ms"]
    assert {"stt", "llm_first_token", "llm_first_sentence", "first_audio", "llm_done",
            "total"} <= set(stages)
    assert (stages["stt"] <= stages["llm_first_token"] <= stages["llm_first_sentence"]
            <= stages["first_audio"] <= stages["total"])


def test_first_audio_arrives_before_the_llm_has_finished(serve_cluster, story):
    frames = [f for _, f in turn(serve_cluster, story, system_prompt=LONG_ANSWER, max_tokens="80")]
    done = frames[-1]
    assert done["type"] == "done" and len([f for f in frames if f["type"] == "audio"]) > 1
    assert done["timings_ms"]["first_audio"] < done["timings_ms"]["llm_done"]


def test_a_turn_can_bound_its_reply(serve_cluster, story):
    """The story prompt writes hundreds of tokens (tests/integration/test_browser.py plays
    them); max_tokens=6 ends the reply after six: a handful of words, one sentence."""
    frames = [f for _, f in turn(serve_cluster, story, system_prompt=LONG_ANSWER, max_tokens="6")]
    done = frames[-1]
    assert done["type"] == "done" and done["cancelled"] is False, frames
    assert 0 < len(done["reply"].split()) <= 6, done["reply"]
    assert [f["type"] for f in frames].count("audio") == 1  # what there was, still spoken


def test_cancel_stops_the_answer_and_the_llm(serve_cluster, story):
    frames, cancelled = [], None
    for _, frame in turn(serve_cluster, story, system_prompt=LONG_ANSWER, turn_id="barge-1"):
        frames.append(frame)
        if frame["type"] == "audio" and cancelled is None:
            cancelled = httpx.post(f"{serve_cluster.base_url}/v1/voice/cancel",
                                   json={"turn_id": "barge-1"}, headers=serve_cluster.headers())
    assert cancelled is not None and cancelled.status_code == 200, cancelled and cancelled.text
    report = cancelled.json()
    assert report["cancelled"] and report["samples_sent"] >= frames[1]["samples"]
    done = frames[-1]
    assert done["type"] == "done" and done["cancelled"] is True
    assert "llm_done" not in done["timings_ms"]  # the LLM was still writing when it was stopped
    # The barge-in reached the ChatLLM replica: its generation was cancelled there (the
    # engine's own tests show a cancelled generation stops within a few tokens).
    wait_for_samples(serve_cluster, {"ray_her_serve_model_errors": {
        "deployment": "ChatLLM", "method": "chat", "kind": "cancelled"}})


def test_bad_requests_are_4xx_or_503_json(serve_cluster, api, utterance):
    files = {"file": ("q.wav", utterance, "audio/wav")}
    cases = [
        (api.post("/v1/voice/turn", data={"engine": "piper"},                  # no file field
                  files={"notes": ("n.txt", b"hi", "text/plain")}), 400),
        (api.post("/v1/voice/turn", json={"engine": "piper"}), 415),           # not multipart
        (api.post("/v1/voice/turn", data={"engine": "opera"}, files=files), 422),
        (api.post("/v1/voice/turn", data={"engine": "chatterbox"}, files=files), 503),
        (api.post("/v1/voice/turn", data={"engine": "piper"},
                  files={"file": ("x.wav", b"RIFF garbage", "audio/wav")}), 400),
        (api.post("/v1/voice/cancel", json={"turn_id": "nobody"}), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["message"]
    assert api.get("/health").status_code == 200
