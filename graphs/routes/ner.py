"""POST /v1/ner: GLiNER spans for any labels, with scores and character offsets."""

from __future__ import annotations

from fastapi import APIRouter

from deployments.ner import NER
from graphs.http import APIError, EdgeRoute, body_limit
from graphs.schemas import NerRequest, NerResponse, NerResult
from graphs.services import ServicesDep, SettingsDep

MAX_BODY_BYTES = 2 * 1024 * 1024

router = APIRouter(route_class=EdgeRoute, tags=["ner"])


@router.post("/v1/ner", response_model=NerResponse, openapi_extra=body_limit(MAX_BODY_BYTES))
async def ner(body: NerRequest, services: ServicesDep, settings: SettingsDep) -> NerResponse:
    limits = settings.ner
    if len(body.texts) > limits.max_texts:
        raise APIError(400, f"texts has {len(body.texts)} items; at most {limits.max_texts}",
                       param="texts")
    if len(body.labels) > limits.max_labels:
        raise APIError(400, f"labels has {len(body.labels)} items; at most {limits.max_labels}",
                       param="labels")
    if max(len(t) for t in body.texts) > limits.max_text_chars:
        raise APIError(400, f"a text is longer than {limits.max_text_chars} characters",
                       param="texts")
    spans = await services.get(NER.name).predict.remote(body.texts, body.labels, body.threshold)
    data = [NerResult(index=i, entities=found) for i, found in enumerate(spans)]
    return NerResponse(model=limits.model, data=data)
