"""The HTTP ingress: one FastAPI app in front of every deployment.

It holds the handles that ``build_app`` bound, checks the token, turns every
error (the routes', the framework's, the replicas') into OpenAI's JSON
envelope and routes by API area (one ``APIRouter`` per module in
``graphs.routes``). ``/openapi.json`` describes every route; ``/docs`` renders
it with Swagger UI 5's files (OpenAPI 3.1) served from the ``swagger-ui-py``
package, so it works on a node without internet.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.schemas import ErrorResponse
from deployments.llm import LLMBadResponse, LLMTimeout, LLMUnreachable
from deployments.logs import install_redaction
from deployments.metrics import GPUMemoryExceeded, ModelUnavailable
from deployments.profile import current_placement
from deployments.results import ReplicaInfo
from deployments.settings import Settings
from deployments.stores import StoreUnavailable
from deployments.text import SynthesisCancelled
from graphs import routing
from graphs.failover import TTSCalls
from graphs.http import (
    APIError, HeaderLimits, RouteTimeout, TokenAuth, root_cause, scrub, validation_message,
)
from graphs.metrics import RouteMetrics
from graphs.routes import (
    chat, documents, embeddings, models, ner, retrieval, speech, status, transcription, ui, voice,
)
from graphs.services import Services
from graphs.voice import TurnRefused
from topology.nodes import Node
from topology.serve_config import AppArgs

log = logging.getLogger("ray.serve")

DOCS_ASSETS = "/docs/assets"
OPEN_PATHS = ("/health", "/docs", "/openapi.json")
"""Served without a token: they hold no data (health, and the API's own description)."""
OPEN_PREFIXES = (f"{DOCS_ASSETS}/",)
ROUTERS = (ui, models, embeddings, ner, retrieval, documents, speech, transcription, voice, chat,
           status)
ERROR_RESPONSES = {
    "4XX": {"model": ErrorResponse, "description": "The request was refused (OpenAI's error envelope)."},
    "5XX": {"model": ErrorResponse, "description": "A model or store is unavailable or busy."},
}


async def api_error(_: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def framework_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own 404, 405 (with its Allow header), 400... in the envelope."""
    message = {
        404: f"no such route: {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}; "
             f"allowed: {(exc.headers or {}).get('Allow', 'none')}",
    }.get(exc.status_code, str(exc.detail))
    code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return APIError(exc.status_code, message, code=code, headers=exc.headers).response()


async def request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_message(list(exc.errors()), strip=("body",)).response()


@dataclass(frozen=True)
class Mapped:
    """How one class of exception, raised here or in a replica, reaches the client."""

    status: int
    type: str
    code: str | None = None
    retry_after_s: int | None = None
    message: str | None = None
    """A fixed message; None: the root cause's own message, scrubbed."""


ERRORS: dict[type[BaseException], Mapped] = {
    BackPressureError: Mapped(503, "overloaded", retry_after_s=1,
                              message="server busy: the model's queue is full"),
    DeploymentUnavailableError: Mapped(503, "unavailable", "model_unavailable", retry_after_s=5),
    GPUMemoryExceeded: Mapped(503, "gpu_memory_exceeded", retry_after_s=1),
    ModelUnavailable: Mapped(503, "unavailable", "model_unavailable", retry_after_s=5),
    StoreUnavailable: Mapped(503, "unavailable", "store_unavailable", retry_after_s=5),
    TurnRefused: Mapped(503, "unavailable", "model_unavailable"),
    SynthesisCancelled: Mapped(409, "invalid_request_error", "cancelled",
                               message="synthesis was cancelled"),
    ValueError: Mapped(400, "invalid_request_error"),
    # The chat server failed (ChatLLM forwarding), not the client.
    LLMUnreachable: Mapped(503, "unavailable", "llm_unreachable", retry_after_s=5),
    LLMTimeout: Mapped(504, "timeout", "llm_timeout", retry_after_s=5),
    LLMBadResponse: Mapped(502, "upstream_error", "llm_bad_response", retry_after_s=5),
}
"""The one error mapping of the gateway. Ray wraps a replica's exception in a
RayTaskError that is also an instance of the original class, so one entry
covers the error wherever it was raised; the client sees only the root
cause's message (``scrub``), and the whole error goes to the log, where Serve
tags it with the request id."""


async def mapped_error(request: Request, exc: Exception) -> JSONResponse:
    mapped = next(ERRORS[c] for c in type(exc).__mro__ if c in ERRORS)
    log.info("%s %s -> %d: %s", request.method, request.url.path, mapped.status, exc)
    return APIError(
        mapped.status, mapped.message or scrub(str(root_cause(exc))) or type(exc).__name__,
        type=mapped.type, code=mapped.code,
        headers={"Retry-After": str(mapped.retry_after_s)} if mapped.retry_after_s else None,
    ).response()


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return APIError(500, f"internal error: {type(root_cause(exc)).__name__}; the server log has "
                         "the details under this request's id", type="server_error").response()


def public_reasons(unavailable: dict[str, str], model_cache: Path) -> dict[str, str]:
    """Why deployments are absent, as clients see it (/health needs no token): no absolute paths."""
    known = {str(model_cache): "$SERVE_MODEL_CACHE"}
    return {name: scrub(reason, known) for name, reason in unavailable.items()}


class EdgeApp(FastAPI):
    """FastAPI whose exception handlers, once set, stand.

    Serve calls ``add_exception_handler`` on the ingress app for a full queue
    (BackPressureError) and a deployment gone (DeploymentUnavailableError),
    with a plain-text 503 without Retry-After; the gateway's JSON 503s with
    Retry-After, installed first, are kept.
    """

    def add_exception_handler(self, exc_class_or_status_code, handler) -> None:
        self.exception_handlers.setdefault(exc_class_or_status_code, handler)


def build_http_app(
    services: Services, settings: Settings, topology: AppArgs, nodes: dict[str, Node]
) -> FastAPI:
    """The FastAPI app; separate from the deployment so it is built the same everywhere."""
    app = EdgeApp(
        title="her-serve",
        summary="OpenAI-compatible speech, embeddings, retrieval and voice-turn API",
        docs_url=None,
        redoc_url=None,
        exception_handlers={
            APIError: api_error,
            HTTPException: framework_error,
            RequestValidationError: request_invalid,
            **{cls: mapped_error for cls in ERRORS},
            Exception: unexpected,
        },
    )
    app.state.services = services
    app.state.settings = settings
    app.state.topology = topology
    app.state.nodes = nodes
    for module in ROUTERS:
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("swagger_ui") / "static")),
              name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    # Each added middleware wraps the ones before: metrics outermost, then header
    # bounds, auth, deadlines.
    app.add_middleware(RouteTimeout, default_s=settings.http.route_timeout_s,
                       per_prefix=settings.http.route_timeouts)
    app.add_middleware(TokenAuth, token=settings.auth.token,
                       open_paths=(*OPEN_PATHS, *ui.OPEN_PATHS), open_prefixes=OPEN_PREFIXES)
    app.add_middleware(HeaderLimits, max_count=settings.http.max_header_count,
                       max_bytes=settings.http.max_header_bytes)
    # FastAPI keeps included routers as nodes; metrics label by the routes themselves.
    routes = [*(r for module in ROUTERS for r in module.router.routes), *app.routes]
    app.add_middleware(RouteMetrics, routes=routes)

    return app


@serve.deployment(max_ongoing_requests=200)
@serve.ingress()
class Gateway:
    """The ingress deployment; its FastAPI app is built per replica from the handles it was given."""

    def __init__(
        self,
        settings: Settings,
        handles: dict[str, DeploymentHandle],
        unavailable: dict[str, str],
        tasks: dict[str, str],
        topology: AppArgs,
        nodes: dict[str, Node],
        node_views: dict[str, dict[str, str]] | None = None,
    ):
        install_redaction()
        self.settings = settings
        self.topology = topology
        self.nodes = nodes
        for name, reason in unavailable.items():
            log.warning("%s is not running: %s", name, reason)
        # The gateway's process owns the routing state its TTS routers report to.
        self.services = Services(
            handles=handles, tasks=tasks,
            unavailable=public_reasons(unavailable, settings.model_cache),
            tts=TTSCalls(settings.speech, routing.process_state()),
            nodes={name: public_reasons(view, settings.model_cache)
                   for name, view in (node_views or {}).items()},
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self.services, self.settings, self.topology, self.nodes)

    def info(self) -> ReplicaInfo:
        """Where this replica runs, in the shape model replicas report (for /v1/status)."""
        return ReplicaInfo(backend="FastAPI", device="cpu", **current_placement().to_dict())
