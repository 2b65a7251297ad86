"""Forgetting: DELETE /v1/documents/{id} and POST /v1/documents/delete (several at once)."""

from __future__ import annotations

from fastapi import APIRouter

from graphs.http import EdgeRoute, body_limit, validate
from graphs.ingest import INGEST
from graphs.schemas import (
    DeleteDocumentsRequest, DocumentDeleted, DocumentDeletedList, DocumentPath,
)
from graphs.services import Services, ServicesDep

DELETE_MAX_BYTES = 128 * 1024  # 256 ids of 256 characters, JSON-escaped

router = APIRouter(route_class=EdgeRoute, tags=["retrieval"])


async def forget(services: Services, ids: list[str]) -> list[DocumentDeleted]:
    result = await services.get(INGEST.name).forget.remote(ids)
    return [DocumentDeleted(id=i, deleted=result.deleted[i]) for i in ids]


@router.post("/v1/documents/delete", response_model=DocumentDeletedList,
             openapi_extra=body_limit(DELETE_MAX_BYTES))
async def delete_documents(body: DeleteDocumentsRequest, services: ServicesDep) -> DocumentDeletedList:
    return DocumentDeletedList(data=await forget(services, body.ids))


# {id:path}: an id may hold "/" (sent percent-encoded as %2F), as ingest accepts it.
@router.delete("/v1/documents/{id:path}", response_model=DocumentDeleted)
async def delete_document(id: str, services: ServicesDep) -> DocumentDeleted:
    doc = validate(DocumentPath, {"id": id})
    [deleted] = await forget(services, [doc.id])
    return deleted
