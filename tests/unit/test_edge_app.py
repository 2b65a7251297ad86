"""The FastAPI edge without Ray: OpenAPI, offline /docs, framework errors in the envelope,
bounded bodies and the JSON 503 for a full queue (the gateway's error mapping)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from ray.serve.exceptions import BackPressureError
from starlette.responses import PlainTextResponse

from deployments.settings import Settings
from tests.edgekit import model_free_gateway

TOKEN = "s3cret"


@pytest.fixture()
def app():
    return model_free_gateway(TOKEN, unavailable={"Embedder": "disabled"})


@pytest.fixture()
def client(app):
    with TestClient(app, raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def envelope(response) -> dict:
    assert response.headers["content-type"] == "application/json", response.text
    return response.json()["error"]


def test_openapi_describes_every_route(client):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/health", "/v1/models", "/v1/embeddings", "/v1/ner", "/v1/retrieve", "/v1/ingest",
        "/v1/documents/delete", "/v1/documents/{id}", "/v1/tts", "/cancel", "/v1/audio/speech", "/v1/audio/voices",
        "/v1/audio/transcriptions", "/v1/voice/turn", "/v1/voice/cancel", "/v1/chat/completions",
        "/v1/status",
    }
    embeddings = spec["paths"]["/v1/embeddings"]["post"]
    assert embeddings["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/EmbeddingRequest")
    assert embeddings["x-max-body-bytes"] == 8 * 1024 * 1024
    assert embeddings["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse")
    form = spec["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]
    fields = form["multipart/form-data"]["schema"]["properties"]
    assert fields["file"]["format"] == "binary" and "response_format" in fields


def test_docs_render_from_the_clusters_own_files_without_a_token(app):
    with TestClient(app) as anonymous:
        page = anonymous.get("/docs")
        assert page.status_code == 200 and "/openapi.json" in page.text
        assert "http://" not in page.text and "https://cdn" not in page.text
        for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            assert asset in page.text
            assert anonymous.get(asset).status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        assert anonymous.get("/v1/models").status_code == 401


def test_framework_errors_come_in_the_envelope(client):
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and envelope(missing)["code"] == "route_not_found"
    wrong = client.get("/v1/embeddings")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert "POST" in envelope(wrong)["message"]
    assert client.get("/docs/assets/nothing.js").status_code == 404


@pytest.mark.parametrize("body,ctype,status", [
    (b'{"input": "x"', "application/json", 400),
    (b'{"input": NaN}', "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'{"input": []}', "application/json", 422),
    (b"input=x", "text/plain", 415),
])
def test_body_errors_come_in_the_envelope(client, body, ctype, status):
    r = client.post("/v1/embeddings", content=body, headers={"content-type": ctype})
    assert r.status_code == status and envelope(r)["message"]


def test_a_declared_oversize_body_is_refused_before_it_is_read(app):
    sent = []

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "path": "/v1/retrieve",
        "raw_path": b"/v1/retrieve", "query_string": b"", "root_path": "", "scheme": "http",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", b"70000")],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"the limit is 65536" in b"".join(m.get("body", b"") for m in sent[1:])


def test_a_full_queue_is_json_503_with_retry_after_despite_serves_handler(app, client):
    async def full():
        raise BackPressureError(num_queued_requests=8, max_queued_requests=8)

    app.add_api_route("/v1/full", full)
    # What Serve does to an ingress app that has add_exception_handler.
    app.add_exception_handler(BackPressureError, lambda *_: PlainTextResponse("busy", 503))
    r = client.get("/v1/full")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert envelope(r)["type"] == "overloaded"


def test_metrics_label_every_route_by_its_pattern(app):
    from graphs.metrics import RouteMetrics, route_label

    (metrics,) = [m for m in app.user_middleware if m.cls is RouteMetrics]
    routes = metrics.kwargs["routes"]
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            scope = {"type": "http", "path": path, "method": method.upper(), "root_path": ""}
            assert route_label(routes, scope) == path
    assert route_label(routes, {"type": "http", "path": "/v1/x", "method": "GET", "root_path": ""}) == "unmatched"


def ray_wrapped(exc: Exception) -> Exception:
    """``exc`` as a handle call raises it: Ray's RayTaskError, also an instance of exc's class."""
    from ray.exceptions import RayTaskError

    traceback = ('\x1b[36mray::WhisperSTT.transcribe()\x1b[39m (pid=4242, ip=10.0.0.7, '
                 'actor_id=4f2a9c8d7e6b5a4f3e2d1c0b01000000)\n  File "/root/her/deployments/audio.py", '
                 f'line 57\n{type(exc).__name__}: {exc}')
    return RayTaskError("transcribe", traceback, exc, proctitle="ray::WhisperSTT", pid=4242,
                        ip="10.0.0.7", actor_id="4f2a9c8d7e6b5a4f3e2d1c0b01000000").as_instanceof_cause()


@pytest.mark.parametrize("raised,status,message", [
    (ValueError("audio is empty (zero bytes)"), 400, "audio is empty (zero bytes)"),
    (ValueError("cannot open /root/.cache/x.wav at 0x7f12ab34cd56"), 400,
     "cannot open <path> at <id>"),
    (RuntimeError("CUDA exploded at /opt/x.py"), 500, "internal error: RuntimeError"),
])
def test_replica_errors_reach_the_client_as_their_root_cause_only(app, client, raised, status, message):
    async def failing():
        raise ray_wrapped(raised)

    app.add_api_route("/v1/failing", failing)
    r = client.get("/v1/failing")
    assert r.status_code == status
    assert envelope(r)["message"].startswith(message)
    for leak in ("pid", "10.0.0.7", "4f2a9c8d", "ray::", "\x1b", "/root", "Traceback"):
        assert leak not in r.text


def test_reasons_shown_to_clients_carry_no_absolute_path():
    from graphs.gateway import public_reasons

    cache = Settings().model_cache
    shown = public_reasons({"WhisperSTT": f"weights absent: {cache}/openai-whisper/x.pt",
                            "Kokoro": "onnx failed in /usr/lib/python3/x.so"}, cache)
    assert shown == {"WhisperSTT": "weights absent: $SERVE_MODEL_CACHE/openai-whisper/x.pt",
                     "Kokoro": "onnx failed in <path>"}


@pytest.mark.parametrize("raw,problem", [
    (b'{"a": NaN}', "malformed JSON"), (b'{"a": -Infinity}', "malformed JSON"),
    (b'{"a": 1e999}', "malformed JSON"), (b'{"a": "\\ud800"}', "malformed JSON"),
    (b'{"a": "\xed\xa0\x80"}', "malformed JSON"), (b'{"a": "x\\u0000"}', "NUL"),
    (b'{"a\\u0000": 1}', "NUL"), (b"[" * 40 + b"]" * 40, "deeper"),
    (b"[" * 5000 + b"]" * 5000, ""), (b"[" + b"1," * 60_000 + b"1]", "values"),
], ids=["NaN", "-Infinity", "1e999", "lone surrogate", "invalid utf-8", "NUL", "NUL key",
        "40 levels", "5000 levels", "60k values"])
def test_strict_json_refuses(raw, problem):
    from graphs.http import APIError, strict_json

    with pytest.raises(APIError) as refused:
        strict_json(raw)
    assert refused.value.status == 400 and problem in refused.value.error.message


def test_a_stored_document_never_breaks_a_read():
    from api.schemas import RetrievedDocument, RetrieveResponse

    deep: dict = {}
    cursor = deep
    for _ in range(500):
        cursor["a"] = {}
        cursor = cursor["a"]
    doc = RetrievedDocument(id="d\ud800", score=float("nan"), text="t\udfff",
                            metadata={"x": float("inf"), "s": "\ud800", "deep": deep})
    body = RetrieveResponse(query="q", results=[doc], entities=[], edges=[], related=[],
                            timings_ms={}).model_dump_json()
    assert '"score":0.0' in body and '"x":null' in body and "\\ud800" not in body


@pytest.mark.parametrize("metadata,problem", [
    ({"a": float("nan")}, "plain JSON"), ({"a": "x" * 9000}, "bytes"),
    ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}, "deeper"),
    ({"a": "\x00"}, "NUL"), ({"\ud800": 1}, "plain JSON"),
])
def test_ingest_metadata_is_bounded(metadata, problem):
    from pydantic import ValidationError

    from api.schemas import IngestDocument

    with pytest.raises(ValidationError, match=problem):
        IngestDocument(id="a", text="t", metadata=metadata)
    IngestDocument(id="a", text="t", metadata={"source": "phone", "tags": ["a", {"b": 1.5}]})


def test_header_bounds_are_431_in_the_envelope(client):
    assert client.get("/health", headers={"X-Big": "a" * 20_000}).status_code == 431
    many = {f"X-H{i}": "v" for i in range(80)}
    r = client.get("/health", headers=many)
    assert r.status_code == 431 and "limits" in envelope(r)["message"]
    assert client.get("/health").status_code == 200


def test_a_large_refused_body_does_not_stall_the_event_loop(app):
    """Validating a million-integer ``input`` on the loop stalled every request for 5 s."""
    import json
    import time

    body = json.dumps({"input": list(range(10**6))}).encode()
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "path": "/v1/embeddings",
        "raw_path": b"/v1/embeddings", "query_string": b"", "root_path": "", "scheme": "http",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }
    sent = []

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    async def main() -> float:
        gaps = []
        done = asyncio.Event()

        async def ticker():
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.002)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await app(scope, receive, send)
        done.set()
        await tick
        return max(gaps)

    longest = asyncio.run(main())
    print(f"longest loop stall {longest * 1000:.0f} ms")
    assert sent[0]["status"] == 400
    assert longest < 1.0, f"the loop stalled {longest:.2f} s"


def exact_value_count(data: object) -> int:
    """Values as ``json_shape_error`` counts them: one, plus every container's length."""
    count, stack = 1, [data]
    while stack:
        value = stack.pop()
        if isinstance(value, (dict, list)):
            count += len(value)
            stack.extend(value.values() if isinstance(value, dict) else value)
    return count


def random_text(rng) -> str:
    """What the counter must not count: commas, brackets, escaped quotes, backslash runs."""
    return "".join(rng.choice(['"', "\\", "\\\\", ",", "[", "{", "a", "é", "\\\"", ":"])
                   for _ in range(rng.randrange(8)))


def random_json(rng, depth: int = 0) -> object:
    kind = rng.choice(["str", "num", "list", "dict"] if depth < 4 else ["str", "num"])
    if kind == "str":
        return random_text(rng)
    if kind == "num":
        return rng.choice([0, -1.5, 10**12, True, None])
    items = [random_json(rng, depth + 1) for _ in range(rng.randrange(1, 5))]
    return items if kind == "list" else {random_text(rng) + str(i): v for i, v in enumerate(items)}


def test_json_value_bound_counts_what_the_parser_would_without_parsing():
    """A large body is counted before it is parsed (issue 12: a million numbers held the
    gateway's loop); the count must never fall under the real one, or a flood gets in."""
    import random

    import orjson

    from graphs.http import json_value_bound

    rng = random.Random(12)
    for _ in range(500):
        data = random_json(rng)
        raw = orjson.dumps(data)
        # no empty containers are generated, so the bound is exact
        assert json_value_bound(raw) == exact_value_count(data), raw
    assert json_value_bound(b'{"a": [], "b": {}}') == 5  # one too many per empty container


def test_a_flood_of_values_is_refused_before_it_is_parsed(monkeypatch):
    import orjson

    import graphs.http as http

    parsed, loads = [], orjson.loads
    monkeypatch.setattr(http.orjson, "loads", lambda raw: parsed.append(raw) or loads(raw))
    with pytest.raises(http.APIError) as refused:
        http.strict_json(orjson.dumps({"input": list(range(10**6))}))
    assert refused.value.status == 400 and "values" in refused.value.error.message
    assert parsed == []
    text = {"input": "a, [b], {c}, " * 20_000}  # commas inside a string are not values
    assert http.strict_json(orjson.dumps(text)) == text and len(parsed) == 1


@pytest.mark.parametrize("path,kwargs", [
    ("/v1/chat/completions", lambda n: {"json": {"messages": [{"role": "user", "content": "hi"}],
                                                 "max_tokens": n}}),
    ("/v1/voice/turn", lambda n: {"files": {"file": ("a.wav", b"RIFF", "audio/wav")},
                                  "data": {"max_tokens": str(n)}}),
])
def test_chat_and_voice_turns_share_the_configured_reply_ceiling(path, kwargs):
    """SERVE_LLM__MAX_COMPLETION_TOKENS bounds a voice turn's reply as it bounds chat's: above
    it a 400 naming max_tokens; within it the request gets past the edge (here to the 503 of
    a cluster with no LLM)."""
    app = model_free_gateway(TOKEN, llm={"max_completion_tokens": 100})
    with TestClient(app, raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        over = client.post(path, **kwargs(101))
        assert over.status_code == 400 and envelope(over)["param"] == "max_tokens", over.text
        assert "at most 100" in envelope(over)["message"]
        within = client.post(path, **kwargs(100))
        assert within.status_code == 503, within.text
