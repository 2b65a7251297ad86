"""GET /health (no auth) and GET /v1/models: what this cluster serves, and where."""

from __future__ import annotations

from fastapi import APIRouter

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
    )


@router.get("/v1/models", response_model=ModelList)
async def models(services: ServicesDep) -> ModelList:
    cards = []
    for name, replicas in (await services.replica_info()).items():
        ok = [r for r in replicas if "error" not in r]
        first = ok[0] if ok else {}
        cards.append(
            ModelCard(
                id=first.get("model", name),
                deployment=name,
                task=services.tasks.get(name, "unknown"),
                status="ready" if ok else "unavailable",
                reason=None if ok else replicas[0].get("error") if replicas else "no replica",
                backend=first.get("backend"),
                device=first.get("device"),
                nodes=sorted({r["host"] for r in ok if "host" in r}),
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
