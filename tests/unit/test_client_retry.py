"""The client's retry policy (pure) and its send loops against real local HTTP servers.

The servers here stand for "a server that misbehaves": a threaded
``http.server`` on 127.0.0.1 that plays a script (503s, Retry-After, a hang,
a broken stream) and records every attempt's headers.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from clients import AsyncHerClient, DeadlineExceeded, HerClient, HerServeError, RetryPolicy
from clients.client import _tts_audio, urls_from_env
from clients.retry import retry_after_s

FAST = RetryPolicy(deadline_s=10, max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.05)
VECTORS = {"object": "list", "model": "fake", "usage": {"prompt_tokens": 2, "total_tokens": 2},
           "data": [{"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
                    {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}]}


def error_body(message: str, type_: str = "unavailable") -> dict:
    return {"error": {"message": message, "type": type_}}


# --- the pure policy -------------------------------------------------------------------------


def test_backoff_is_full_jitter_within_its_exponential_cap():
    policy = RetryPolicy(backoff_base_s=0.1, backoff_max_s=2.0)
    rng = random.Random(7)
    for retry, cap in [(0, 0.1), (1, 0.2), (3, 0.8), (4, 1.6), (5, 2.0), (12, 2.0)]:
        samples = [policy.backoff_s(retry, rng) for _ in range(2000)]
        assert all(0.0 <= s <= cap for s in samples)
        # full jitter spreads over the whole range, not a fixed step
        assert min(samples) < 0.05 * cap and max(samples) > 0.95 * cap


def test_retry_after_as_seconds_and_as_http_date():
    assert retry_after_s("3") == 3.0
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 28 <= retry_after_s(format_datetime(later, usegmt=True)) <= 30
    assert retry_after_s("soon") is None and retry_after_s(None) is None


@pytest.mark.parametrize("status,retry", [(429, True), (502, True), (503, True), (504, True),
                                          (400, False), (401, False), (404, False),
                                          (413, False), (422, False), (500, False)])
def test_only_overload_and_gateway_statuses_are_retryable(status, retry):
    assert RetryPolicy().retryable(status=status) is retry


def test_transport_errors_are_retryable_other_exceptions_not():
    policy = RetryPolicy()
    assert policy.retryable(error=httpx.ConnectError("refused"))
    assert policy.retryable(error=httpx.ReadTimeout("slow"))
    assert policy.retryable(error=httpx.RemoteProtocolError("cut short"))
    assert not policy.retryable(error=httpx.UnsupportedProtocol("no scheme"))
    assert not policy.retryable(error=ValueError("bug"))


def fake_response(status: int, headers: dict | None = None, body: dict | None = None):
    return httpx.Response(status, headers=headers, json=body or error_body("busy"),
                          request=httpx.Request("POST", "http://x/v1/tts"))


def test_attempts_rotate_urls_on_http_failures():
    attempts = RetryPolicy(backoff_base_s=0).start(["http://a", "http://b"])
    for expected in ["http://a", "http://b", "http://a"]:
        assert attempts.next()[0] == expected
        attempts.failed(response=fake_response(503))


def test_a_refusing_url_is_skipped_and_the_next_tried_without_waiting():
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=1.0)
    attempts = policy.start(["http://a", "http://b", "http://c"])
    assert attempts.next()[0] == "http://a"
    assert attempts.failed(error=httpx.ConnectError("refused")) == 0.0
    assert attempts.next()[0] == "http://b"
    assert attempts.failed(response=fake_response(503)) > 0.0
    assert attempts.next()[0] == "http://c"
    attempts.failed(response=fake_response(503))
    assert attempts.next()[0] == "http://b"  # a refused: skipped for this call


def test_an_unanswered_connect_also_moves_on_at_once():
    attempts = RetryPolicy(backoff_base_s=1.0).start(["http://a", "http://b"])
    attempts.next()
    assert attempts.failed(error=httpx.ConnectTimeout("no route")) == 0.0
    assert attempts.next()[0] == "http://b"


def test_when_every_url_refuses_it_backs_off_then_tries_them_all_again():
    attempts = RetryPolicy(backoff_base_s=1.0, backoff_max_s=1.0).start(["http://a", "http://b"])
    delays = []
    for expected in ["http://a", "http://b", "http://a"]:
        assert attempts.next()[0] == expected
        delays.append(attempts.failed(error=httpx.ConnectError("refused")))
    assert delays[0] == 0.0 and 0.0 < delays[1] <= 1.0 and delays[2] == 0.0


def test_attempts_honor_retry_after_capped():
    policy = RetryPolicy(max_retry_after_s=4.0, backoff_max_s=0.01)
    attempts = policy.start(["http://a"])
    attempts.next()
    assert attempts.failed(response=fake_response(429, {"Retry-After": "2"})) == 2.0
    attempts.next()
    assert attempts.failed(response=fake_response(503, {"Retry-After": "60"})) == 4.0


def test_attempts_give_up_when_retry_after_outlives_the_deadline():
    attempts = RetryPolicy(deadline_s=1.0, max_retry_after_s=30).start(["http://a"])
    attempts.next()
    with pytest.raises(DeadlineExceeded) as err:
        attempts.failed(response=fake_response(429, {"Retry-After": "5"}))
    assert err.value.status == 429 and "busy" in str(err.value)


def test_non_retryable_status_raises_the_servers_error_at_once():
    attempts = RetryPolicy().start(["http://a"])
    attempts.next()
    body = {"error": {"message": "input: too short", "type": "invalid_request_error",
                      "param": "input", "code": None}}
    with pytest.raises(HerServeError) as err:
        attempts.failed(response=fake_response(422, body=body))
    assert (err.value.status, err.value.type, err.value.param) == (422, "invalid_request_error",
                                                                   "input")
    assert err.value.message == "input: too short"


def test_attempts_stop_at_max_attempts():
    attempts = RetryPolicy(max_attempts=3, backoff_base_s=0).start(["http://a"])
    for _ in range(2):
        attempts.next()
        attempts.failed(response=fake_response(503))
    attempts.next()
    with pytest.raises(HerServeError) as err:
        attempts.failed(response=fake_response(503))
    assert err.value.status == 503 and err.value.attempts == 3


def test_urls_from_env(monkeypatch):
    monkeypatch.setenv("HER_SERVE_URLS", " http://panda:8000/ , http://titan:8000 ")
    assert urls_from_env() == ["http://panda:8000", "http://titan:8000"]
    assert urls_from_env(["http://x/"]) == ["http://x"]
    monkeypatch.delenv("HER_SERVE_URLS")
    assert urls_from_env() == ["http://127.0.0.1:8000"]
    with pytest.raises(ValueError, match="http://"):
        urls_from_env("panda:8000")


def test_tts_audio_reads_the_chatterbox_headers():
    pcm = b"\x01\x00" * 24000
    response = httpx.Response(200, content=pcm, headers={
        "X-Sample-Rate": "24000", "X-Channels": "1", "X-Format": "pcm_s16le",
        "X-TTS-Engine": "kokoro"})
    audio = _tts_audio(response)
    assert (audio.sample_rate, audio.channels, audio.engine) == (24000, 1, "kokoro")
    assert audio.duration_s == pytest.approx(1.0)


# --- the send loops against real local servers -----------------------------------------------


class FakeServer:
    """A threaded HTTP server that answers each request with the next scripted step.

    Steps: ``("status", code, headers)``, ``"ok"`` (embeddings JSON), ``("hang", seconds)``,
    ``"stream"`` (three chunks), ``"broken-stream"`` (one chunk, then the connection dies).
    Once the script runs out it keeps answering ``"ok"``.
    """

    def __init__(self, script: list):
        self.script = list(script)
        self.seen: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._answer()

            def do_POST(self):
                self._answer()

            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                server.seen.append({"path": self.path, "headers": dict(self.headers),
                                    "body": body})
                step = server.script.pop(0) if server.script else "ok"
                if step == "ok":
                    self._send(200, json.dumps(VECTORS).encode(), "application/json")
                elif step in ("stream", "broken-stream"):
                    self._stream(broken=step == "broken-stream")
                elif step[0] == "hang":
                    time.sleep(step[1])
                    self.close_connection = True
                else:
                    _, code, headers = step
                    self._send(code, json.dumps(error_body(f"scripted {code}")).encode(),
                               "application/json", headers)

            def _send(self, code, payload, ctype, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, broken):
                self.send_response(200)
                self.send_header("Content-Type", "audio/pcm")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in [b"abc", b"def", b"ghi"]:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    if broken:
                        self.close_connection = True
                        return
                    time.sleep(0.05)
                self.wfile.write(b"0\r\n\r\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def keys(self) -> list[str]:
        return [s["headers"]["Idempotency-Key"] for s in self.seen]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    servers = []

    def start(script):
        servers.append(FakeServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_503s_are_retried_with_one_idempotency_key(fake):
    server = fake([("status", 503, {}), ("status", 503, {})])
    with HerClient(urls=[server.url], token="t", policy=FAST) as client:
        vectors = client.embed(["a", "b"])
    assert vectors == [[1.0, 0.0], [0.0, 1.0]]  # ordered by index
    keys = server.keys()
    assert len(keys) == 3 and len(set(keys)) == 1
    assert len({s["headers"]["X-Request-ID"] for s in server.seen}) == 1
    assert all(s["headers"]["Authorization"] == "Bearer t" for s in server.seen)


def test_a_given_idempotency_key_is_sent(fake):
    server = fake([("status", 502, {})])
    with HerClient(urls=[server.url], policy=FAST) as client:
        client.embed("a", idempotency_key="sentence-42")
    assert server.keys() == ["sentence-42", "sentence-42"]


def test_each_call_gets_its_own_key(fake):
    server = fake([])
    with HerClient(urls=[server.url], policy=FAST) as client:
        client.embed("a")
        client.embed("a")
    assert len(set(server.keys())) == 2


def test_retry_after_is_waited(fake):
    server = fake([("status", 429, {"Retry-After": "1"})])
    with HerClient(urls=[server.url], policy=FAST) as client:
        start = time.monotonic()
        client.embed("a")
    assert time.monotonic() - start >= 0.95  # backoff alone would be <= 0.05 s
    assert len(server.seen) == 2


def test_validation_errors_are_not_retried(fake):
    server = fake([("status", 422, {})])
    with HerClient(urls=[server.url], policy=FAST) as client, pytest.raises(HerServeError) as err:
        client.embed("a")
    assert err.value.status == 422 and err.value.message == "scripted 422"
    assert len(server.seen) == 1


def test_a_dead_url_first_falls_through_to_the_live_one(fake):
    server = fake([])
    with HerClient(urls=[closed_port_url(), server.url], policy=FAST) as client:
        assert client.embed("a") == [[1.0, 0.0], [0.0, 1.0]]
    assert len(server.seen) == 1


def test_an_answer_that_breaks_the_contract_is_a_her_serve_error(fake):
    server = fake([])  # answers embeddings JSON where /health is expected
    with HerClient(urls=[server.url], policy=FAST) as client, pytest.raises(HerServeError) as err:
        client.health()
    assert err.value.type == "bad_response" and err.value.status == 200


def test_all_urls_dead_raises_a_connection_error():
    policy = RetryPolicy(deadline_s=5, max_attempts=4, backoff_base_s=0.01)
    with HerClient(urls=[closed_port_url(), closed_port_url()], policy=policy) as client:
        with pytest.raises(HerServeError) as err:
            client.health()
    assert err.value.status is None and err.value.type == "connection_error"
    assert err.value.attempts == 4


def test_a_hang_raises_within_the_deadline(fake):
    server = fake([("hang", 5), ("hang", 5)])
    policy = RetryPolicy(deadline_s=1.0, backoff_base_s=0.01)
    with HerClient(urls=[server.url], policy=policy) as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.embed("a")
    assert time.monotonic() - start < 1.5


def test_stream_retries_before_the_first_byte(fake):
    server = fake([("status", 503, {}), "stream"])
    with HerClient(urls=[server.url], policy=FAST) as client:
        chunks = list(client.stream_speech("hi", voice="v"))
    assert b"".join(chunks) == b"abcdefghi"
    assert len(server.seen) == 2 and len(set(server.keys())) == 1
    assert json.loads(server.seen[0]["body"])["input"] == "hi"


def test_stream_is_not_retried_after_the_first_byte(fake):
    server = fake(["broken-stream"])
    with HerClient(urls=[server.url], policy=FAST) as client:
        got = []
        with pytest.raises(HerServeError, match="after the first byte"):
            for chunk in client.stream_speech("hi", voice="v"):
                got.append(chunk)
    assert got == [b"abc"] and len(server.seen) == 1


async def test_async_client_retries_with_one_key_and_falls_through(fake):
    server = fake([("status", 503, {}), ("status", 504, {})])
    async with AsyncHerClient(urls=[closed_port_url(), server.url], policy=FAST) as client:
        assert await client.embed(["a", "b"]) == [[1.0, 0.0], [0.0, 1.0]]
    assert len(server.seen) == 3 and len(set(server.keys())) == 1


async def test_async_hang_raises_within_the_deadline(fake):
    server = fake([("hang", 5), ("hang", 5)])
    async with AsyncHerClient(urls=[server.url], policy=RetryPolicy(deadline_s=1.0)) as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await client.embed("a")
    assert time.monotonic() - start < 1.5


async def test_async_stream_retries_before_the_first_byte(fake):
    server = fake([("status", 503, {}), "stream"])
    async with AsyncHerClient(urls=[server.url], policy=FAST) as client:
        chunks = [c async for c in client.stream_speech("hi", voice="v")]
    assert b"".join(chunks) == b"abcdefghi" and len(set(server.keys())) == 1


async def test_concurrent_async_calls_each_retry_on_their_own(fake):
    """One client, two calls in flight: each keeps its own key and its own attempts."""
    server = fake([("status", 503, {}), ("status", 503, {}), ("status", 503, {})])
    async with AsyncHerClient(urls=[server.url], policy=FAST) as client:
        first, second = await asyncio.gather(client.embed("a"), client.embed("b"))
    assert first == second == [[1.0, 0.0], [0.0, 1.0]]
    keys = server.keys()
    assert len(keys) == 5 and len(set(keys)) == 2  # 3 failures + 2 successes, two calls
