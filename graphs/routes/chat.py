"""POST /v1/chat/completions, OpenAI-compatible: whole, or streamed as server-sent events.

A stream is ``data: {chat.completion.chunk}`` events ending with ``data: [DONE]``.
Errors before the first chunk are plain HTTP errors (the gateway maps
``LLMError``); an error after it is sent as a ``data: {"error": ...}`` event,
as OpenAI and vLLM do. A client that goes away stops the generation.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import AsyncIterator

from fastapi import APIRouter
from starlette.responses import StreamingResponse

from deployments.llm import CHAT_LLM, ChatChunk, ChatRequest, LLMError
from deployments.settings import LLMSettings
from graphs.http import APIError, EdgeRoute, body_limit, root_cause, scrub
from api.schemas import (
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, ChatUsage, ErrorDetail, ErrorResponse,
)
from graphs.retrieval import RETRIEVAL, with_context
from graphs.services import Services, ServicesDep, SettingsDep

CHAT = CHAT_LLM.name
DEFAULT_MAX_TOKENS = 512
"""``max_tokens`` of a request that names none (capped by the setting's ceiling)."""
MAX_BODY_BYTES = 256 * 1024
"""Largest body, refused (413) before it is read: a long conversation fits, a 1 MB message not."""

router = APIRouter(route_class=EdgeRoute, tags=["chat"])


def usage(last: ChatChunk) -> ChatUsage:
    return ChatUsage(prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
                     total_tokens=last.prompt_tokens + last.completion_tokens)


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


def reply_budget(asked: int | None, default: int, limits: LLMSettings) -> int:
    """A reply's ``max_tokens``: what was asked, or ``default`` within the configured ceiling;
    above the ceiling it is the client's error (chat and voice turns alike)."""
    budget = asked or min(default, limits.max_completion_tokens)
    if budget > limits.max_completion_tokens:
        raise APIError(400, f"max_tokens is {budget}; at most {limits.max_completion_tokens}",
                       param="max_tokens")
    return budget


def chat_request(body: ChatCompletionRequest, limits: LLMSettings) -> ChatRequest:
    return ChatRequest([m.model_dump(exclude_none=True) for m in body.messages],
                       reply_budget(body.max_tokens, DEFAULT_MAX_TOKENS, limits),
                       body.temperature, tuple(body.stop))


async def grounded(request: ChatRequest, k: int, services: Services) -> ChatRequest:
    """The request with what retrieval finds for its last user message in the system
    prompt (one is added at the front when the conversation has none)."""
    question = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
    if not question.strip():
        return request
    found = await services.get(RETRIEVAL.name).retrieve.remote(question, k, 1, None)
    context = [hit.text for hit in found.results]
    if not context:
        return request
    messages = list(request.messages)
    if messages[0]["role"] == "system":
        messages[0] = {**messages[0], "content": with_context(messages[0]["content"], context)}
    else:
        messages.insert(0, {"role": "system", "content": with_context("", context)})
    return replace(request, messages=messages)


async def model_id(services: Services) -> str:
    info = await services.replica_info()
    return next((r.model for r in info.get(CHAT, []) if r.model), CHAT)


@router.post(
    "/v1/chat/completions", response_model=ChatCompletion,
    openapi_extra=body_limit(MAX_BODY_BYTES),
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "A chat.completion, or with stream=true server-sent "
                                    "chat.completion.chunk events ending in data: [DONE]."}},
)
async def create(body: ChatCompletionRequest, services: ServicesDep, settings: SettingsDep):
    request = chat_request(body, settings.llm)
    if body.retrieve:
        request = await grounded(request, body.k, services)
    chunks = services.get(CHAT).options(stream=True).chat.remote(request)
    try:  # an LLMError here is the gateway's to map
        first: ChatChunk = await chunks.__anext__()
    except ValueError as exc:  # the prompt does not fit the model's context
        raise APIError(400, scrub(str(root_cause(exc))), param="messages") from None
    model, cid, created = await model_id(services), f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not body.stream:
        parts, last = [first.text], first
        async for chunk in chunks:
            parts.append(chunk.text)
            last = chunk
        return ChatCompletion(
            id=cid, created=created, model=model, usage=usage(last),
            choices=[ChatChoice(message=AssistantMessage(content="".join(parts)),
                                finish_reason=last.finish_reason or "stop")])

    def event(delta: ChatDelta, finish: str | None = None) -> str:
        return sse(ChatCompletionChunk(
            id=cid, created=created, model=model,
            choices=[ChatChunkChoice(delta=delta, finish_reason=finish)]).model_dump_json())

    async def events() -> AsyncIterator[str]:
        finished = False
        try:
            yield event(ChatDelta(role="assistant", content=""))
            chunk = first
            while True:
                if chunk.finish_reason is not None:
                    yield event(ChatDelta(content=chunk.text or None), chunk.finish_reason)
                    if body.stream_options and body.stream_options.include_usage:
                        yield sse(ChatCompletionChunk(id=cid, created=created, model=model,
                                                      choices=[], usage=usage(chunk))
                                  .model_dump_json())
                    finished = True
                    break
                yield event(ChatDelta(content=chunk.text))
                chunk = await chunks.__anext__()
        except LLMError as exc:
            error = ErrorDetail(message=scrub(exc.message), type="server_error",
                                code=f"llm_{exc.kind}")
            yield sse(ErrorResponse(error=error).model_dump_json(exclude_none=True))
            finished = True
        finally:
            if not finished:  # the client left: stop the generation
                chunks.cancel()
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
