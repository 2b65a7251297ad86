"""POST /v1/retrieve (text -> ranked, graph-expanded context) and POST /v1/ingest."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from api.schemas import IngestRequest, IngestResponse, RetrieveRequest, RetrieveResponse
from graphs.http import APIError, EdgeRoute, body_limit
from graphs.ingest import INGEST
from graphs.metrics import ARRIVED_AT
from graphs.retrieval import RETRIEVAL, elapsed_ms
from graphs.services import ServicesDep, SettingsDep

RETRIEVE_MAX_BYTES = 64 * 1024
INGEST_MAX_BYTES = 8 * 1024 * 1024

router = APIRouter(route_class=EdgeRoute, tags=["retrieval"])


@router.post("/v1/retrieve", response_model=RetrieveResponse,
             openapi_extra=body_limit(RETRIEVE_MAX_BYTES))
async def retrieve(
    body: RetrieveRequest, request: Request, services: ServicesDep, settings: SettingsDep
) -> Response:
    """Ranked, graph-expanded context. ``timings_ms`` accounts for the request's time in the
    gateway: each stage (embed, vector, graph), the RetrievalGraph's whole call
    (``retrieval``), the hop to it and back (``hop``) and ``total``, from the request's
    arrival to its answer."""
    known_labels = {label.lower() for label in settings.ner.labels}
    unknown = sorted({label for label in body.labels or [] if label.lower() not in known_labels})
    if unknown:
        raise APIError(
            422, f"unknown entity labels {unknown}; known: {sorted(known_labels)}",
            param="labels",
        )
    start = time.perf_counter()
    result = await services.get(RETRIEVAL.name).retrieve.remote(
        body.query, body.k, body.hops, body.labels
    )
    result.timings_ms["hop"] = round(elapsed_ms(start) - result.timings_ms["retrieval"], 3)
    response = RetrieveResponse.model_validate(result, from_attributes=True)
    response.timings_ms["total"] = elapsed_ms(getattr(request.state, ARRIVED_AT, start))
    return Response(response.model_dump_json(), media_type="application/json")


@router.post("/v1/ingest", response_model=IngestResponse,
             openapi_extra=body_limit(INGEST_MAX_BYTES))
async def ingest(body: IngestRequest, services: ServicesDep) -> IngestResponse:
    result = await services.get(INGEST.name).ingest.remote(
        [d.model_dump() for d in body.documents]
    )
    return IngestResponse.model_validate(result, from_attributes=True)
