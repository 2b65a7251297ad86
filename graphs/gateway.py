"""The HTTP ingress: one FastAPI app in front of every deployment.

It holds the handles that ``build_app`` bound, checks the token, turns every
error (the routes', the framework's, the replicas') into OpenAI's JSON
envelope and routes by API area (one ``APIRouter`` per module in
``graphs.routes``). ``/openapi.json`` describes every route; ``/docs`` renders
it with Swagger UI's files served from the ``swagger-ui-bundle`` package, so it
works on a node without internet.
"""

from __future__ import annotations

import logging

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from cluster.nodes import Node
from deployments.logs import install_redaction
from deployments.metrics import GPUMemoryExceeded
from deployments.profile import current_placement
from deployments.settings import Settings
from deployments.stores import StoreUnavailable
from graphs.http import APIError, RouteTimeout, TokenAuth, validation_message
from graphs.metrics import RouteMetrics
from graphs.routes import (
    embeddings, models, ner, retrieval, speech, status, transcription, voice,
)
from graphs.schemas import ErrorResponse
from graphs.services import Services
from graphs.topology import AppArgs

log = logging.getLogger("ray.serve")

DOCS_ASSETS = "/docs/assets"
OPEN_PATHS = ("/health", "/docs", "/openapi.json")
"""Served without a token: they hold no data (health, and the API's own description)."""
OPEN_PREFIXES = (f"{DOCS_ASSETS}/",)
ROUTERS = (models, embeddings, ner, retrieval, speech, transcription, voice, status)
ERROR_RESPONSES = {
    "4XX": {"model": ErrorResponse, "description": "The request was refused (OpenAI's error envelope)."},
    "5XX": {"model": ErrorResponse, "description": "A model or store is unavailable or busy."},
}


def root_cause(exc: BaseException) -> BaseException:
    """The replica's own exception inside Ray's RayTaskError wrappers (one per hop)."""
    while isinstance(getattr(exc, "cause", None), BaseException):
        exc = exc.cause
    return exc


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


async def backpressure(_: Request, exc: BackPressureError) -> JSONResponse:
    return APIError(
        503, "server busy: the model's queue is full", type="overloaded",
        headers={"Retry-After": "1"},
    ).response()


async def gpu_memory(_: Request, exc: GPUMemoryExceeded) -> JSONResponse:
    return APIError(
        503, str(root_cause(exc)), type="gpu_memory_exceeded", headers={"Retry-After": "1"},
    ).response()


async def store_down(_: Request, exc: Exception) -> JSONResponse:
    return APIError(503, str(root_cause(exc)), type="unavailable", code="store_unavailable",
                    headers={"Retry-After": "5"}).response()


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()


class EdgeApp(FastAPI):
    """FastAPI whose exception handlers, once set, stand.

    Serve calls ``add_exception_handler`` on the ingress app for a full queue
    (BackPressureError), with a plain-text 503 without Retry-After; the
    gateway's JSON 503 with Retry-After, installed first, is kept.
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
            BackPressureError: backpressure,
            GPUMemoryExceeded: gpu_memory,
            StoreUnavailable: store_down,
            Exception: unexpected,
        },
    )
    app.state.services = services
    app.state.settings = settings
    app.state.topology = topology
    app.state.nodes = nodes
    for module in ROUTERS:
        app.include_router(module.router, responses=ERROR_RESPONSES)
    # Each added middleware wraps the ones before: metrics outermost, then auth, then deadlines.
    app.add_middleware(RouteTimeout, default_s=settings.http.route_timeout_s,
                       per_prefix=settings.http.route_timeouts)
    app.add_middleware(TokenAuth, token=settings.auth.token, open_paths=OPEN_PATHS,
                       open_prefixes=OPEN_PREFIXES)
    app.add_middleware(RouteMetrics, routes=app.routes)
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

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
    ):
        install_redaction()
        self.settings = settings
        self.topology = topology
        self.nodes = nodes
        self.services = Services(handles=handles, unavailable=unavailable, tasks=tasks)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self.services, self.settings, self.topology, self.nodes)

    def info(self) -> dict:
        """Where this replica runs, in the shape model replicas report (for /v1/status)."""
        return {**current_placement().to_dict(), "backend": "FastAPI", "device": "cpu"}
