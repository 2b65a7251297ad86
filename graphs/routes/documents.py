"""Forgetting: DELETE /v1/documents/{id} and POST /v1/documents/delete (several at once)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from graphs.http import parse_json, validate
from graphs.schemas import (
    DeleteDocumentsRequest, DocumentDeleted, DocumentDeletedList, DocumentPath,
)
from graphs.services import Services

DELETE_MAX_BYTES = 128 * 1024  # 256 ids of 256 characters, JSON-escaped


def routes(services: Services) -> list[Route]:
    async def forget(ids: list[str]) -> list[DocumentDeleted]:
        result = await services.get("IngestGraph").forget.remote(ids)
        return [DocumentDeleted(id=i, deleted=result.deleted[i]) for i in ids]

    async def delete_one(request: Request) -> JSONResponse:
        # {id:path}: an id may hold "/" (sent percent-encoded), as ingest accepts it.
        doc = validate(DocumentPath, {"id": request.path_params["id"]})
        [deleted] = await forget([doc.id])
        return JSONResponse(deleted.model_dump())

    async def delete_many(request: Request) -> JSONResponse:
        body = await parse_json(request, DeleteDocumentsRequest, DELETE_MAX_BYTES)
        return JSONResponse(DocumentDeletedList(data=await forget(body.ids)).model_dump())

    return [
        Route("/v1/documents/delete", delete_many, methods=["POST"]),
        Route("/v1/documents/{id:path}", delete_one, methods=["DELETE"]),
    ]
