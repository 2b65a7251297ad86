"""POST /v1/embeddings, OpenAI-compatible (the official client works unchanged)."""

from __future__ import annotations

import base64

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from api.schemas import EmbeddingRequest, EmbeddingResponse
from deployments.embedding import EMBEDDER
from deployments.results import Embeddings
from deployments.registry import of_task
from graphs.http import APIError, EdgeRoute, body_limit
from graphs.services import Services, ServicesDep, SettingsDep

DEFAULT_EMBEDDER = EMBEDDER.name
MAX_BODY_BYTES = 8 * 1024 * 1024

router = APIRouter(route_class=EdgeRoute, tags=["embeddings"])


async def pick_embedder(services: Services, requested: str | None) -> tuple[str, str]:
    """(deployment, model id) for the model a client named; the real-time one by default."""
    info = await services.replica_info()
    served = {
        m.name: next((r.model for r in info.get(m.name, []) if r.model), None)
        for m in of_task("embeddings")
        if m.name in services.handles
    }
    if requested is None:
        services.get(DEFAULT_EMBEDDER)
        return DEFAULT_EMBEDDER, served.get(DEFAULT_EMBEDDER) or DEFAULT_EMBEDDER
    for name, model in served.items():
        if model and requested in (model, model.split("/")[-1]):
            return name, model
    known = sorted(m for m in served.values() if m)
    raise APIError(
        404,
        f"model {requested!r} is not served for embeddings; served: {known}",
        param="model",
        code="model_not_found",
    )


@router.post("/v1/embeddings", response_model=EmbeddingResponse,
             openapi_extra=body_limit(MAX_BODY_BYTES))
async def create_embeddings(
    body: EmbeddingRequest, services: ServicesDep, settings: SettingsDep
) -> Response:
    limits = settings.embedding
    texts = body.texts()
    if len(texts) > limits.max_inputs:
        raise APIError(
            400, f"input has {len(texts)} items; at most {limits.max_inputs}", param="input"
        )
    longest = max(len(t) for t in texts)
    if longest > limits.max_input_chars:
        raise APIError(
            400,
            f"an input is {longest} characters; at most {limits.max_input_chars}",
            param="input",
        )
    name, model = await pick_embedder(services, body.model)
    result = await services.embed_calls(name).embed(
        texts, body.input_type == "query", body.dimensions
    )
    return embedding_response(result, model, body.encoding_format == "base64")


def embedding_response(result: Embeddings, model: str, base64_floats: bool) -> Response:
    """The EmbeddingResponse's JSON, written by orjson straight from the float32 arrays.

    No float lists and no second pydantic validation of them (FastAPI skips
    ``response_model`` for a Response): the JSON of 32 vectors of 384 floats took
    longer to build that way than the handle call that computed them.
    """
    data = [
        {"object": "embedding", "index": i,
         "embedding": base64.b64encode(vec.astype("<f4").tobytes()).decode() if base64_floats
         else vec}
        for i, vec in enumerate(result.vectors)
    ]
    tokens = sum(result.tokens)
    body = {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")
