"""GET /health (no auth) and GET /v1/models: what this cluster serves, and where."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deployments.results import ReplicaInfo
from graphs.schemas import Health, ModelCard, ModelList
from graphs.services import Services


def routes(services: Services, token_configured: bool) -> list[Route]:
    async def health(_: Request) -> JSONResponse:
        body = Health(
            auth="token" if token_configured else "loopback-only",
            deployments={
                **{name: "ready" for name in services.handles},
                **services.unavailable,
            },
        )
        return JSONResponse(body.model_dump())

    async def models(_: Request) -> JSONResponse:
        cards = []
        for name, replicas in (await services.replica_info()).items():
            ok = [r for r in replicas if r.error is None]
            first = ok[0] if ok else ReplicaInfo(model=name)
            cards.append(
                ModelCard(
                    id=first.model or name,
                    deployment=name,
                    task=services.tasks.get(name, "unknown"),
                    status="ready" if ok else "unavailable",
                    reason=None if ok else replicas[0].error if replicas else "no replica",
                    backend=first.backend or None,
                    device=first.device or None,
                    nodes=sorted({r.host for r in ok if r.host}),
                )
            )
        for name, reason in services.unavailable.items():
            cards.append(
                ModelCard(
                    id=name,
                    deployment=name,
                    task=services.tasks.get(name, "unknown"),
                    status="unavailable",
                    reason=reason,
                )
            )
        return JSONResponse(ModelList(data=cards).model_dump())

    return [Route("/health", health), Route("/v1/models", models)]
