"""The real gateway app with no deployment behind it: the edge's own behaviour (auth, limits,
errors, pages, /docs) tested without Ray (shared by unit tests)."""

from __future__ import annotations

from deployments.settings import Settings, SpeechSettings
from graphs.failover import TTSCalls
from graphs.gateway import build_http_app
from graphs.routing import RoutingState
from graphs.services import Services


def model_free_gateway(token: str, unavailable: dict[str, str] | None = None, **settings):
    """The FastAPI app ``build_http_app`` makes, with ``token``, any other ``Settings`` fields
    given, and no running deployment."""
    services = Services(handles={}, unavailable=dict(unavailable or {}), tasks={},
                        tts=TTSCalls(SpeechSettings(), RoutingState()))
    return build_http_app(services, Settings(auth={"token": token}, **settings), None, {})
