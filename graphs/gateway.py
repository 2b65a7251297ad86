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

from deployments.settings import Settings
from graphs.http import APIError, TokenAuth
from graphs.routes import embeddings, models, speech, transcription
from graphs.services import Services

log = logging.getLogger("ray.serve")


def build_http_app(services: Services, settings: Settings) -> Starlette:
    """The Starlette app; separate from the deployment so it is built the same everywhere."""

    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    async def backpressure(_: Request, exc: BackPressureError) -> JSONResponse:
        return APIError(
            503, "server busy: the model's queue is full", type="overloaded",
            headers={"Retry-After": "1"},
        ).response()

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()

    return Starlette(
        routes=[
            *models.routes(services, token_configured=bool(settings.auth.token)),
            *embeddings.routes(services, settings.embedding),
            *speech.routes(services, settings.speech),
            *transcription.routes(services, settings.speech.whisper),
        ],
        middleware=[Middleware(TokenAuth, token=settings.auth.token)],
        exception_handlers={
            APIError: api_error,
            BackPressureError: backpressure,
            Exception: unexpected,
        },
    )


@serve.deployment(max_ongoing_requests=200)
@serve.ingress()
class Gateway:
    def __init__(
        self,
        settings: Settings,
        handles: dict[str, DeploymentHandle],
        unavailable: dict[str, str],
        tasks: dict[str, str],
    ):
        self.settings = settings
        self.services = Services(handles=handles, unavailable=unavailable, tasks=tasks)

    def __serve_build_asgi_app__(self) -> Starlette:
        return build_http_app(self.services, self.settings)
