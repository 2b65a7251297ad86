"""Token auth, request parsing and error mapping, driven through the real ASGI middleware."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from deployments.stores import StoreUnavailable
from graphs.http import APIError, TokenAuth


async def ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def call(auth: TokenAuth, path="/v1/embeddings", client="127.0.0.1", headers=()):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "path": path, "method": "GET", "client": (client, 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(auth(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(
    "headers,status",
    [
        ((), 401),
        ((("Authorization", "Bearer nope"),), 401),
        ((("X-Internal-Token", "nope"),), 401),
        ((("Authorization", "Bearer s3cret"),), 200),
        ((("authorization", "bearer s3cret"),), 200),
        ((("X-Internal-Token", "s3cret"),), 200),
        # Exactly one credential: any second one is refused, equal or not, empty or not.
        ((("Authorization", "Bearer s3cret"), ("Authorization", "Bearer s3cret")), 401),
        ((("Authorization", "Bearer nope"), ("Authorization", "Bearer s3cret")), 401),
        ((("Authorization", "Bearer s3cret"), ("X-Internal-Token", "s3cret")), 401),
        ((("Authorization", "Bearer s3cret"), ("X-Internal-Token", "")), 401),
        ((("X-Internal-Token", "s3cret"), ("X-Internal-Token", "s3cret")), 401),
        ((("X-Internal-Token", "s3cret"), ("Authorization", "Basic eDp5")), 401),
        # Surrounding whitespace is handled the same in both headers.
        ((("Authorization", "  Bearer   s3cret  "),), 200),
        ((("X-Internal-Token", "  s3cret\t"),), 200),
        ((("Authorization", "Bearer s3 cret"),), 401),
        ((("X-Internal-Token", "s3 cret"),), 401),
        # An empty or malformed header is a credential that does not match.
        ((("Authorization", ""),), 401),
        ((("Authorization", "s3cret"),), 401),
        ((("X-Internal-Token", ""),), 401),
    ],
)
def test_token_required(headers, status):
    assert call(TokenAuth(ok_app, "s3cret"), headers=headers)[0] == status


def test_open_paths_and_prefixes():
    auth = TokenAuth(ok_app, "s3cret", open_paths=("/health", "/docs"), open_prefixes=("/docs/assets/",))
    assert call(auth, path="/health")[0] == 200
    assert call(auth, path="/docs/assets/swagger-ui.css")[0] == 200
    for closed in ("/health/", "/healthz", "/docs/", "/docs/assetsx", "/v1/health"):
        assert call(auth, path=closed)[0] == 401, closed


def test_health_is_open():
    assert call(TokenAuth(ok_app, "s3cret"), path="/health")[0] == 200


def test_without_token_only_loopback_is_served():
    auth = TokenAuth(ok_app, "")
    assert call(auth, client="127.0.0.1")[0] == 200
    assert call(auth, client="::1")[0] == 200
    status, body = call(auth, client="192.168.1.20")
    assert status == 403 and b"loopback" in body


def test_api_error_envelope():
    r = APIError(422, "input: bad", param="input").response()
    assert r.status_code == 422
    assert r.body == b'{"error":{"message":"input: bad","type":"invalid_request_error","param":"input"}}'


def test_route_timeout_answers_504_json_and_spares_fast_routes():
    from graphs.http import RouteTimeout

    async def slow_app(scope, receive, send):
        await asyncio.sleep(5)
        await ok_app(scope, receive, send)

    slow = RouteTimeout(slow_app, default_s=5, per_prefix={"/v1/tts": 0.2})
    status, body = call(slow, path="/v1/tts")
    assert status == 504 and b'"type":"timeout"' in body
    fast = RouteTimeout(ok_app, default_s=0.2)
    assert call(fast, path="/v1/tts") == (200, b"ok")


def test_store_unavailable_survives_pickling():
    """Ray pickles a replica's exception; the gateway maps this class to 503."""
    again = pickle.loads(pickle.dumps(StoreUnavailable("postgresql", "127.0.0.1:5432: refused")))
    assert isinstance(again, StoreUnavailable) and again.store == "postgresql"
    assert str(again) == "postgresql is unavailable: 127.0.0.1:5432: refused"
