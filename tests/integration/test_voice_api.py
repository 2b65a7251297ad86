"""/v1/voice/turn on the real cluster: real Whisper base and Piper, a fake LLM server."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from tests.fakes.llm_server import REPLY
from tests.speechkit import espeak_wav

QUESTION = "When does the train to the city leave tonight?"


@pytest.fixture(scope="module")
def utterance() -> bytes:
    return espeak_wav(QUESTION, rate=16_000)


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


def test_first_audio_arrives_before_the_llm_has_finished(serve_cluster, fake_llm, utterance):
    frames = list(turn(serve_cluster, utterance, system_prompt="[fake:slow] be brief"))
    kinds = [f["type"] for _, f in frames]
    assert kinds[0] == "transcript" and kinds[-1] == "done" and "error" not in kinds
    assert "train" in frames[0][1]["text"].lower()
    audio = [(t, f) for t, f in frames if f["type"] == "audio"]
    assert len(audio) == 3  # the fake's reply has three sentences
    for _, f in audio:
        assert len(base64.b64decode(f["audio"])) == 2 * f["samples"] > 16_000 // 2
        assert f["sample_rate"] == 16_000
    assert audio[0][0] < fake_llm.finished_at[-1]  # heard before the LLM stopped writing
    done = frames[-1][1]
    assert done["reply"].split() == REPLY.split()
    assert done["samples_sent"] == sum(f["samples"] for _, f in audio)
    assert {"stt", "llm_first_token", "first_audio", "total"} <= set(done["timings_ms"])
    assert done["timings_ms"]["first_audio"] < done["timings_ms"]["llm_done"]


def test_cancel_stops_the_answer_and_reports_what_was_sent(serve_cluster, utterance):
    frames, cancelled = [], None
    for _, frame in turn(serve_cluster, utterance, system_prompt="[fake:slow]", turn_id="barge-1"):
        frames.append(frame)
        if frame["type"] == "audio" and cancelled is None:
            cancelled = httpx.post(f"{serve_cluster.base_url}/v1/voice/cancel",
                                   json={"turn_id": "barge-1"}, headers=serve_cluster.headers())
    assert cancelled.status_code == 200, cancelled.text
    report = cancelled.json()
    assert report["cancelled"] and report["samples_sent"] >= frames[1]["samples"]
    done = frames[-1]
    assert done["type"] == "done" and done["cancelled"] is True
    assert len([f for f in frames if f["type"] == "audio"]) < 3


@pytest.mark.parametrize("mode,kind", [("hang", "timeout"), ("garbage", "bad_response")])
def test_a_broken_llm_ends_the_turn_with_an_error_frame(serve_cluster, utterance, mode, kind):
    start = time.monotonic()
    frames = [f for _, f in turn(serve_cluster, utterance, system_prompt=f"[fake:{mode}]")]
    assert time.monotonic() - start < 30  # never a hang
    errors = [f for f in frames if f["type"] == "error"]
    assert errors and errors[0]["stage"] == "llm" and errors[0]["kind"] == kind
    assert frames[-1]["type"] == "done"


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
