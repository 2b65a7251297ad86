"""The HTTP ingress: one Starlette app in front of every deployment.

It holds the handles that ``build_app`` bound, checks the token, turns every
client mistake into a 4xx JSON error and routes by API area (``graphs.routes``).
"""

from __future__ import annotations

import logging

from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from cluster.nodes import Node
from deployments.llm import LLMBadResponse, LLMError, LLMTimeout, LLMUnreachable
from deployments.logs import install_redaction
from deployments.metrics import GPUMemoryExceeded
from deployments.profile import current_placement
from deployments.results import ReplicaInfo
from deployments.settings import Settings
from deployments.stores import StoreUnavailable
from graphs.http import APIError, RouteTimeout, TokenAuth, root_cause
from graphs.metrics import RouteMetrics
from graphs.routes import (
    chat, embeddings, models, ner, retrieval, speech, status, transcription, voice,
)
from graphs.services import Services
from graphs.topology import AppArgs

log = logging.getLogger("ray.serve")

# How the chat server failed -> (HTTP status, error type): the server failed, not the client.
LLM_ERRORS = {LLMUnreachable: (503, "unavailable"), LLMTimeout: (504, "timeout"),
              LLMBadResponse: (502, "upstream_error")}


def build_http_app(
    services: Services, settings: Settings, topology: AppArgs, nodes: dict[str, Node]
) -> Starlette:
    """The Starlette app; separate from the deployment so it is built the same everywhere."""

    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

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

    async def llm_failed(_: Request, exc: LLMError) -> JSONResponse:
        cause = root_cause(exc)
        status, type_ = LLM_ERRORS[type(cause)]
        return APIError(status, cause.message, type=type_, code=f"llm_{cause.kind}",
                        headers={"Retry-After": "5"}).response()

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()

    routes = [
        *models.routes(services, token_configured=bool(settings.auth.token)),
        *embeddings.routes(services, settings.embedding),
        *ner.routes(services, settings.ner),
        *retrieval.routes(services, settings.ner),
        *speech.routes(services, settings.speech),
        *transcription.routes(services, settings.speech.whisper),
        *voice.routes(services, settings.speech.whisper),
        *chat.routes(services, settings.llm),
        *status.routes(services, topology, nodes),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RouteMetrics, routes=routes),
            Middleware(TokenAuth, token=settings.auth.token),
            Middleware(
                RouteTimeout,
                default_s=settings.http.route_timeout_s,
                per_prefix=settings.http.route_timeouts,
            ),
        ],
        exception_handlers={
            APIError: api_error,
            BackPressureError: backpressure,
            GPUMemoryExceeded: gpu_memory,
            StoreUnavailable: store_down,
            LLMError: llm_failed,
            Exception: unexpected,
        },
    )


class OwnErrors:
    """The Starlette app as Serve sees it: a bare ASGI callable.

    Serve installs its own handler for a full queue (BackPressureError) on any
    app that has ``add_exception_handler``, replacing ours with a plain-text
    503 without Retry-After; behind this wrapper the gateway's JSON 503 with
    Retry-After stands.
    """

    def __init__(self, app: Starlette):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@serve.deployment(max_ongoing_requests=200)
@serve.ingress()
class Gateway:
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

    def __serve_build_asgi_app__(self) -> OwnErrors:
        return OwnErrors(build_http_app(self.services, self.settings, self.topology, self.nodes))

    def info(self) -> ReplicaInfo:
        """Where this replica runs, in the shape model replicas report (for /v1/status)."""
        return ReplicaInfo(backend="Starlette", device="cpu", **current_placement().to_dict())
