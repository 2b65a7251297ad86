"""GET /health (no auth) and GET /v1/models: what this cluster serves, and where."""

from __future__ import annotations

from fastapi import APIRouter

from deployments.results import ReplicaInfo
from graphs.http import EdgeRoute
from graphs.schemas import Health, ModelCard, ModelList
from graphs.services import ServicesDep, SettingsDep

router = APIRouter(route_class=EdgeRoute, tags=["models"])


@router.get("/health", response_model=Health)
async def health(services: ServicesDep, settings: SettingsDep) -> Health:
    return Health(
        auth="token" if settings.auth.token else "loopback-only",
        deployments={
            **{name: "ready" for name in services.handles},
            **services.unavailable,
        },
        nodes=services.node_views(),
    )


@router.get("/v1/models", response_model=ModelList)
async def models(services: ServicesDep) -> ModelList:
    cards = []
    for name, replicas in (await services.replica_info()).items():
        ok = [r for r in replicas if r.error is None and r.available]
        first = ok[0] if ok else ReplicaInfo(model=name)
        cards.append(
            ModelCard(
                id=first.model or name,
                deployment=name,
                task=services.tasks.get(name, "unknown"),
                status="ready" if ok else "unavailable",
                reason=None if ok else (replicas[0].error or replicas[0].reason
                                        if replicas else "no replica"),
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
    return ModelList(data=cards)
