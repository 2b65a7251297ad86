"""POST /v1/retrieve (text -> ranked, graph-expanded context) and POST /v1/ingest."""

from __future__ import annotations

from fastapi import APIRouter

from graphs.http import APIError, EdgeRoute, body_limit
from graphs.ingest import INGEST
from graphs.retrieval import RETRIEVAL
from graphs.schemas import IngestRequest, IngestResponse, RetrieveRequest, RetrieveResponse
from graphs.services import ServicesDep, SettingsDep

RETRIEVE_MAX_BYTES = 64 * 1024
INGEST_MAX_BYTES = 8 * 1024 * 1024

router = APIRouter(route_class=EdgeRoute, tags=["retrieval"])


@router.post("/v1/retrieve", response_model=RetrieveResponse,
             openapi_extra=body_limit(RETRIEVE_MAX_BYTES))
async def retrieve(
    body: RetrieveRequest, services: ServicesDep, settings: SettingsDep
) -> RetrieveResponse:
    known_labels = {label.lower() for label in settings.ner.labels}
    unknown = sorted({label for label in body.labels or [] if label.lower() not in known_labels})
    if unknown:
        raise APIError(
            422, f"unknown entity labels {unknown}; known: {sorted(known_labels)}",
            param="labels",
        )
    result = await services.get(RETRIEVAL.name).retrieve.remote(
        body.query, body.k, body.hops, body.labels
    )
    return RetrieveResponse.model_validate(result, from_attributes=True)


@router.post("/v1/ingest", response_model=IngestResponse,
             openapi_extra=body_limit(INGEST_MAX_BYTES))
async def ingest(body: IngestRequest, services: ServicesDep) -> IngestResponse:
    result = await services.get(INGEST.name).ingest.remote(
        [d.model_dump() for d in body.documents]
    )
    return IngestResponse.model_validate(result, from_attributes=True)
