"""The FastAPI edge without Ray: OpenAPI, offline /docs, framework errors in the envelope,
bounded bodies and the JSON 503 for a full queue (the gateway's error mapping)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from ray.serve.exceptions import BackPressureError
from starlette.responses import PlainTextResponse

from deployments.settings import Settings
from graphs.gateway import build_http_app
from graphs.services import Services

TOKEN = "s3cret"


@pytest.fixture()
def app():
    return build_http_app(Services(handles={}, unavailable={"Embedder": "disabled"}, tasks={}),
                          Settings(auth={"token": TOKEN}), None, {})


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
        "/v1/tts", "/cancel", "/v1/audio/speech", "/v1/audio/voices",
        "/v1/audio/transcriptions", "/v1/voice/turn", "/v1/voice/cancel", "/v1/status",
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
