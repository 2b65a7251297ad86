"""/v1/chat/completions on the real cluster (the embedded SmolLM2-135M), through the official
``openai`` client, streamed and not, and the bad input it must refuse."""

from __future__ import annotations

import openai
import pytest

MODEL = "SmolLM2-135M-Instruct"
ASK = [{"role": "system", "content": "You are a helpful assistant."},
       {"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def oai(serve_cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serve_cluster.base_url}/v1", api_key=serve_cluster.token,
                         timeout=120, max_retries=0)


def test_a_whole_completion_through_the_openai_client(oai):
    reply = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=24, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_a_streamed_completion_is_the_same_reply_in_pieces(oai):
    whole = oai.chat.completions.create(messages=ASK, max_tokens=24, temperature=0, model=MODEL)
    chunks = list(oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=24,
                                              temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 2
    assert "".join(pieces) == whole.choices[0].message.content  # greedy: the same reply
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_max_tokens_and_stop_strings_bound_the_reply(oai):
    short = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=3, temperature=0)
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    full = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=24, temperature=0)
    text = full.choices[0].message.content
    stop = text.split()[3]
    cut = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=24, temperature=0,
                                      stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]


def test_the_model_is_listed_with_task_chat(api):
    cards = {c["deployment"]: c for c in api.get("/v1/models").json()["data"]}
    assert cards["ChatLLM"]["task"] == "chat" and cards["ChatLLM"]["id"] == MODEL
    assert cards["ChatLLM"]["status"] == "ready"


def test_bad_input_is_a_4xx_in_the_json_envelope(api):
    user = {"role": "user", "content": "hi"}
    cases = [
        ({"messages": []}, 422, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "messages.0.role"),
        ({"messages": [user], "max_tokens": 0}, 422, "max_tokens"),
        ({"messages": [user], "max_tokens": 100_000}, 400, "max_tokens"),
        ({"messages": [user], "temperature": 3}, 422, "temperature"),
        ({"messages": [user], "stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
        ({"messages": [user], "n": 2}, 422, "n"),
        ({"messages": [user], "retrieve": True, "k": 0}, 422, "k"),
        ({"messages": [user], "retrieve": "perhaps"}, 422, "retrieve"),
        ({"messages": [{"role": "user", "content": "x" * 1_000_000}]}, 413, None),
        ({"messages": [{"role": "user", "content": "word " * 40_000}]}, 400, "messages"),
    ]
    for body, status, param in cases:
        response = api.post("/v1/chat/completions", json=body)
        assert response.status_code == status, (body.keys(), response.text)
        error = response.json()["error"]
        assert error["message"] and error.get("param") == param
        assert "Traceback" not in error["message"]
    not_json = api.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"]["message"]
    assert api.get("/health").status_code == 200


def test_the_openai_client_sees_bad_input_as_a_bad_request(oai):
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100_000)


def test_retrieve_answers_from_your_documents(oai, api, serve_cluster):
    """The ``retrieve`` extension puts the closest documents in the system prompt: SmolLM2
    (greedy) finds the key where the note says; without it, it cannot. `her-serve ask
    --retrieve` is the same call."""
    from typer.testing import CliRunner

    from clients.cli import app

    note = {"id": "chat-spare-key", "text": "The spare house key is under the blue flowerpot "
                                            "next to the garage door."}
    assert api.post("/v1/ingest", json={"documents": [note]}).status_code == 200
    try:
        question = [{"role": "user", "content": "Where is the spare key?"}]
        found = oai.chat.completions.create(model=MODEL, messages=question, max_tokens=32,
                                            temperature=0, extra_body={"retrieve": True, "k": 2})
        alone = oai.chat.completions.create(model=MODEL, messages=question, max_tokens=32,
                                            temperature=0)
        assert "flowerpot" in found.choices[0].message.content, found.choices[0].message
        assert "flowerpot" not in alone.choices[0].message.content
        result = CliRunner().invoke(app, ["--url", serve_cluster.base_url, "--token",
                                          serve_cluster.token, "ask", "Where is the spare key?",
                                          "--retrieve", "-k", "2", "--temperature", "0"])
        assert result.exit_code == 0 and "flowerpot" in result.output, result.output
    finally:  # the retrieval tests compare the store with their own corpus
        assert api.delete(f"/v1/documents/{note['id']}").json()["deleted"]
