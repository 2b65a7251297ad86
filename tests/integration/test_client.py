"""HerClient, AsyncHerClient and the CLI against the real two-node test cluster: every
call the client makes, with the real models (ingest, retrieve and forget are in
test_retrieval_api.py)."""

from __future__ import annotations

import io
import math
import socket
import wave

import pytest
from typer.testing import CliRunner

from clients import AsyncHerClient, HerClient, HerServeError, RetryPolicy
from clients.cli import app


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def client(serve_cluster):
    with HerClient([serve_cluster.base_url], serve_cluster.token) as c:
        yield c


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b))


def test_health_and_models(client):
    assert client.health().deployments["Embedder"] == "ready"
    cards = {c.deployment: c for c in client.models().data}
    assert cards["Embedder"].status == "ready" and cards["Embedder"].task


def test_embed_gives_real_minilm_vectors(client):
    cat, kitten, invoice = client.embed(
        ["a cat sleeps on the sofa", "a kitten naps on the couch", "quarterly tax invoice due"])
    assert len(cat) == 384
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in (cat, kitten, invoice))
    assert cosine(cat, kitten) > cosine(cat, invoice) + 0.2


def test_a_dead_url_first_then_the_cluster(serve_cluster):
    with HerClient([dead_url(), serve_cluster.base_url], serve_cluster.token) as c:
        assert len(c.embed("hello")[0]) == 384


def test_a_wrong_token_is_401_and_not_retried(serve_cluster):
    with HerClient([serve_cluster.base_url], "wrong-token") as c, \
            pytest.raises(HerServeError) as err:
        c.embed("hello")
    assert err.value.status == 401 and err.value.type == "authentication_error"
    assert err.value.attempts == 1


def test_an_unknown_model_carries_the_servers_message(client):
    with pytest.raises(HerServeError) as err:
        client.embed("hello", model="no-such-model")
    assert err.value.status == 404 and err.value.code == "model_not_found"
    assert "no-such-model" in err.value.message and err.value.attempts == 1


async def test_async_client_embeds(serve_cluster):
    policy = RetryPolicy(deadline_s=30)
    async with AsyncHerClient([dead_url(), serve_cluster.base_url], serve_cluster.token,
                              policy) as c:
        vectors = await c.embed(["one", "two"], input_type="query")
    assert [len(v) for v in vectors] == [384, 384]


def test_cli_embed_and_models(serve_cluster):
    runner = CliRunner()
    base = ["--url", serve_cluster.base_url, "--token", serve_cluster.token]
    result = runner.invoke(app, [*base, "embed", "hello world", "goodbye"])
    assert result.exit_code == 0, result.output
    assert "384" in result.output and "1.0000" in result.output
    result = runner.invoke(app, [*base, "models"])
    assert result.exit_code == 0, result.output
    assert "Embedder" in result.output and "ready" in result.output


def test_cli_wrong_token_is_a_readable_error(serve_cluster):
    result = CliRunner().invoke(app, ["--url", serve_cluster.base_url, "--token", "nope",
                                      "embed", "hello"])
    assert result.exit_code == 1
    assert "HTTP 401" in result.output and "Traceback" not in result.output


def test_cli_status_and_live_capacity(serve_cluster):
    """`status` shows where replicas run; `capacity --live` puts live use next to the plan."""
    runner = CliRunner(env={"COLUMNS": "220"})
    base = ["--url", serve_cluster.base_url, "--token", serve_cluster.token]
    result = runner.invoke(app, [*base, "status"])
    assert result.exit_code == 0, result.output
    for word in ("titan", "panda", "Embedder", "PiperTTS", "MiniLMBackend"):
        assert word in result.output, word
    result = runner.invoke(app, [*base, "capacity", "--live", "serve_config.yaml"])
    assert result.exit_code == 0, result.output
    assert "planned" in result.output and "fits" in result.output


def test_speech_whole_and_streamed_in_the_real_voices(client):
    """OpenAI's speech API names a model in every request: the client sends one
    (Kokoro unless told), so a call that leaves it out is no 422."""
    with wave.open(io.BytesIO(client.speech("The kitchen light is on.", "alloy"))) as w:
        assert w.getframerate() == 24000  # Kokoro
        kokoro = w.readframes(w.getnframes())
    assert len(kokoro) > 24000  # over half a second of 16-bit speech
    with wave.open(io.BytesIO(client.speech("The kitchen light is on.", "alloy", "piper"))) as w:
        assert w.getframerate() == 22050
    pcm = b"".join(client.stream_speech("The kitchen light is on.", "alloy", "piper"))
    assert len(pcm) > 22050 and len(pcm) % 2 == 0


def test_tts_contract_and_the_phones_cancel(client):
    audio = client.tts("The kitchen light is on.")
    assert audio.sample_rate == 24000 and audio.duration_s > 0.5
    assert audio.engine == "KokoroTTS"  # no Chatterbox weights here: the fallback speaks
    assert set(client.cancel()["cancelled"]) >= {"KokoroTTS", "PiperTTS"}


def test_cli_say_writes_a_sized_wav_that_whisper_transcribes(serve_cluster, tmp_path):
    runner = CliRunner()
    base = ["--url", serve_cluster.base_url, "--token", serve_cluster.token]
    out = tmp_path / "said.wav"
    result = runner.invoke(app, [*base, "say", "Please water the tomato plants.", "--model",
                                 "piper", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with wave.open(str(out)) as w:  # the header's sizes are the file's, not a stream's
        assert w.getnframes() * w.getsampwidth() == out.stat().st_size - 44
        seconds = w.getnframes() / w.getframerate()
    assert 1 < seconds < 10 and f"{seconds:.2f} s at 22050 Hz" in result.output
    result = runner.invoke(app, [*base, "transcribe", str(out)])
    assert result.exit_code == 0, result.output
    assert "tomato" in result.output.lower()


def test_chat_and_cli_ask_get_the_embedded_models_reply(client, serve_cluster):
    """SmolLM2 answers through the client (greedy: the same question, the same reply) and
    through `her-serve ask`, which says when --max-tokens cut the reply."""
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    first = client.chat(messages, max_tokens=24, temperature=0)
    assert first.choices[0].message.content.strip() and first.usage.completion_tokens <= 24
    assert client.chat(messages, max_tokens=24, temperature=0).choices == first.choices
    result = CliRunner().invoke(app, ["--url", serve_cluster.base_url, "--token",
                                      serve_cluster.token, "ask", "Tell me a long story.",
                                      "--max-tokens", "5", "--temperature", "0"])
    assert result.exit_code == 0, result.output
    *reply, usage = result.output.strip().splitlines()
    assert " ".join(reply).strip() and usage == "5 tokens (cut at --max-tokens)", result.output
