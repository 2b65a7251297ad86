"""Gateway metrics: per-route requests and latency, and per-stage latency of graphs.

Two things for other modules to use:

- ``RouteMetrics``: ASGI middleware (already installed in ``graphs/gateway.py``).
- ``stage_timer(graph, stage, timings)``: time one stage of a multi-deployment
  graph (retrieval, voice)::

      timings: dict[str, float] = {}
      with stage_timer("voice", "stt", timings):
          text = await services.get("WhisperSTT").transcribe.remote(audio)
      with stage_timer("voice", "llm", timings):
          ...
      return JSONResponse({..., "timings_ms": timings})

Metrics are created on first use, inside the replica, so Ray tags them with
the Gateway deployment and replica. Labels stay bounded: the route is the
matched route pattern, never the raw path.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Iterator

from ray.serve.metrics import Counter, Histogram
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.metrics import LATENCY_BUCKETS_MS

ARRIVED_AT = "arrived_at"
"""``request.state.arrived_at``: when the gateway got the request (perf_counter), for
routes that report their whole time next to their stages."""


@functools.cache
def _metrics() -> SimpleNamespace:
    return SimpleNamespace(
        requests=Counter(
            "her_serve_http_requests",
            description="HTTP requests at the gateway by route, method and status class.",
            tag_keys=("route", "method", "status_class"),
        ),
        latency=Histogram(
            "her_serve_http_latency_ms",
            description="Gateway time per HTTP request, until the response starts (ms).",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("route", "method"),
        ),
        stage=Histogram(
            "her_serve_stage_latency_ms",
            description="Time of one stage of a graph (ms), e.g. voice/stt.",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("graph", "stage"),
        ),
    )


@contextmanager
def stage_timer(graph: str, stage: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Record how long the block took as ``graph``/``stage``; also into ``timings`` (ms)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        record_stage(graph, stage, (time.perf_counter() - start) * 1000, timings)


def record_stage(graph: str, stage: str, ms: float, timings: dict[str, float] | None = None) -> None:
    """Record a stage measured some other way (time to first token, to first audio)."""
    _metrics().stage.observe(ms, tags={"graph": graph, "stage": stage})
    if timings is not None:
        timings[stage] = round(ms, 3)


def route_label(routes: list[BaseRoute], scope: Scope) -> str:
    """The route pattern a request matches (``/v1/embeddings``), or ``unmatched``; without
    convertors (``/v1/documents/{id}``), as OpenAPI names it."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path_format", "unmatched")
    return "unmatched"


class RouteMetrics:
    """ASGI middleware: count and time every HTTP request, auth failures included.

    Latency runs until the response starts, so a streaming response is timed
    to its first byte.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        labels = {"route": route_label(self.routes, scope), "method": scope["method"]}
        start = time.perf_counter()
        scope.setdefault("state", {})[ARRIVED_AT] = start  # request.state.arrived_at
        status = 500  # an exception that escapes every handler becomes a 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                _metrics().latency.observe((time.perf_counter() - start) * 1000, tags=labels)
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            _metrics().requests.inc(tags={**labels, "status_class": f"{status // 100}xx"})
