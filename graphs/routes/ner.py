"""POST /v1/ner: GLiNER spans for any labels, with scores and character offsets."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deployments.ner import NER
from deployments.settings import NerSettings
from graphs.http import APIError, parse_json
from graphs.schemas import NerRequest, NerResponse, NerResult
from graphs.services import Services

MAX_BODY_BYTES = 2 * 1024 * 1024


def routes(services: Services, limits: NerSettings) -> list[Route]:
    async def ner(request: Request) -> JSONResponse:
        body = await parse_json(request, NerRequest, MAX_BODY_BYTES)
        if len(body.texts) > limits.max_texts:
            raise APIError(400, f"texts has {len(body.texts)} items; at most {limits.max_texts}",
                           param="texts")
        if len(body.labels) > limits.max_labels:
            raise APIError(400, f"labels has {len(body.labels)} items; at most {limits.max_labels}",
                           param="labels")
        if max(len(t) for t in body.texts) > limits.max_text_chars:
            raise APIError(400, f"a text is longer than {limits.max_text_chars} characters",
                           param="texts")
        spans = await services.get(NER.name).predict.remote(
            body.texts, body.labels, body.threshold
        )
        data = [NerResult(index=i, entities=found) for i, found in enumerate(spans)]
        return JSONResponse(NerResponse(model=limits.model, data=data).model_dump())

    return [Route("/v1/ner", ner, methods=["POST"])]
