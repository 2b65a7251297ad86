"""POST /v1/retrieve (text -> ranked, graph-expanded context) and POST /v1/ingest."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deployments.settings import NerSettings
from graphs.ingest import INGEST
from graphs.retrieval import RETRIEVAL
from graphs.http import APIError, parse_json
from graphs.schemas import IngestRequest, IngestResponse, RetrieveRequest, RetrieveResponse
from graphs.services import Services

RETRIEVE_MAX_BYTES = 64 * 1024
INGEST_MAX_BYTES = 8 * 1024 * 1024


def routes(services: Services, ner: NerSettings) -> list[Route]:
    known_labels = {label.lower() for label in ner.labels}

    async def retrieve(request: Request) -> JSONResponse:
        body = await parse_json(request, RetrieveRequest, RETRIEVE_MAX_BYTES)
        unknown = sorted({label for label in body.labels or [] if label.lower() not in known_labels})
        if unknown:
            raise APIError(
                422, f"unknown entity labels {unknown}; known: {sorted(known_labels)}",
                param="labels",
            )
        result = await services.get(RETRIEVAL.name).retrieve.remote(
            body.query, body.k, body.hops, body.labels
        )
        response = RetrieveResponse.model_validate(result, from_attributes=True)
        return JSONResponse(response.model_dump())

    async def ingest(request: Request) -> JSONResponse:
        body = await parse_json(request, IngestRequest, INGEST_MAX_BYTES)
        result = await services.get(INGEST.name).ingest.remote(
            [d.model_dump() for d in body.documents]
        )
        response = IngestResponse.model_validate(result, from_attributes=True)
        return JSONResponse(response.model_dump())

    return [
        Route("/v1/retrieve", retrieve, methods=["POST"]),
        Route("/v1/ingest", ingest, methods=["POST"]),
    ]
