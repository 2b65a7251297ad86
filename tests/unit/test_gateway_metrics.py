"""Gateway metrics helpers on a real Starlette app (the exported values are checked on the cluster)."""

from __future__ import annotations

import time

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from graphs.metrics import RouteMetrics, route_label, stage_timer


async def item(request):
    return PlainTextResponse(request.path_params["id"])


async def boom(_):
    raise RuntimeError("boom")


ROUTES = [Route("/v1/items/{id}", item), Route("/boom", boom)]


def scope(path: str) -> dict:
    return {"type": "http", "path": path, "method": "GET", "root_path": ""}


def test_route_label_is_the_pattern_not_the_path():
    assert route_label(ROUTES, scope("/v1/items/42")) == "/v1/items/{id}"
    assert route_label(ROUTES, scope("/v1/secret-probe")) == "unmatched"


def test_middleware_passes_responses_and_errors_through():
    app = Starlette(routes=ROUTES, middleware=[Middleware(RouteMetrics, routes=ROUTES)])
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/items/7").text == "7"
        assert client.get("/nope").status_code == 404
        assert client.get("/boom").status_code == 500


def test_stage_timer_records_each_stage_in_ms():
    timings: dict[str, float] = {}
    with stage_timer("voice", "stt", timings):
        time.sleep(0.02)
    with stage_timer("voice", "tts", timings):
        pass
    assert list(timings) == ["stt", "tts"]
    assert timings["stt"] >= 20 and timings["tts"] < timings["stt"]


def test_stage_timer_records_a_failing_stage_too():
    timings: dict[str, float] = {}
    with pytest.raises(KeyError):
        with stage_timer("retrieval", "search", timings):
            raise KeyError("index")
    assert "search" in timings
