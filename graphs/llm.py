"""The LLM the voice graph talks to: an external OpenAI-compatible chat endpoint.

In production it is the vLLM server on Titan. It is outside this project, so
it gets the same treatment as any network dependency: a connect deadline, a
deadline for the first token and between tokens, and clear errors for an
endpoint that hangs, dies, or answers something that is not a chat stream.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import AsyncIterator

import httpx
from deployments.settings import LLMSettings


class LLMError(Exception):
    """The LLM endpoint failed: unreachable, too slow, or not a chat stream."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind  # unreachable | timeout | bad_response


@dataclass
class ChatLLM:
    settings: LLMSettings

    @property
    def configured(self) -> bool:
        return bool(self.settings.url)

    async def stream(self, messages: list[dict]) -> AsyncIterator[str]:
        """Yield the reply's text pieces as the endpoint streams them."""
        s = self.settings
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        body = {
            "model": s.model,
            "messages": messages,
            "stream": True,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
        }
        read = max(s.first_token_timeout_s, s.token_timeout_s)
        timeout = httpx.Timeout(connect=5.0, read=read, write=5.0, pool=5.0)
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                async with client.stream(
                    "POST", f"{s.url.rstrip('/')}/chat/completions", json=body, headers=headers
                ) as response:
                    if response.status_code != 200:
                        text = (await response.aread())[:200].decode(errors="replace")
                        raise LLMError(f"LLM answered HTTP {response.status_code}: {text}", "bad_response")
                    deltas = _chat_deltas(response.aiter_lines())
                    async for piece in _deadlines(deltas, s.first_token_timeout_s, s.token_timeout_s):
                        yield piece
        except httpx.TimeoutException:
            raise LLMError("LLM did not answer in time", "timeout") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise LLMError(f"LLM unreachable: {type(exc).__name__}", "unreachable") from None


async def _deadlines(items: AsyncIterator[str], first_s: float, between_s: float) -> AsyncIterator[str]:
    """Re-yield ``items``, failing when the first or any later one is too slow."""
    iterator, timeout = items.__aiter__(), first_s
    while True:
        try:
            item = await asyncio.wait_for(iterator.__anext__(), timeout)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            what = "first token" if timeout == first_s else "next token"
            raise LLMError(f"LLM sent no {what} within {timeout:g} s", "timeout") from None
        timeout = between_s
        yield item


async def _chat_deltas(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Parse OpenAI chat-completion SSE lines into content deltas."""
    saw_data = False
    async for line in lines:
        if not line.strip():
            continue
        if not line.startswith("data:"):
            raise LLMError(f"LLM stream is not server-sent events: {line[:80]!r}", "bad_response")
        data = line[5:].strip()
        if data == "[DONE]":
            return
        saw_data = True
        try:
            chunk = json.loads(data)
            delta = chunk["choices"][0].get("delta", {}).get("content") or ""
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise LLMError(f"LLM sent a malformed chunk: {data[:80]!r}", "bad_response") from None
        if delta:
            yield delta
    if not saw_data:
        raise LLMError("LLM stream ended without any data", "bad_response")
