"""The her-serve client the phone daemon uses: ``HerClient`` (sync) and ``AsyncHerClient``.

Both share the endpoint methods (``_Endpoints``: what to send, how to read the
answer), the retry policy and tenacity's retry loop (``clients.retry``); each
writes only one attempt's I/O (``_attempt``) and how a stream is read on.
Every call carries an ``Idempotency-Key`` that stays the same across retries
and an ``X-Request-ID``. Nothing connects until a method is called.

Base URLs come from ``urls=`` or ``HER_SERVE_URLS`` (comma-separated, Panda's
local proxy first, then Titan's); the token from ``token=`` or ``HER_SERVE_TOKEN``.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Callable, Iterator
from urllib.parse import quote

import httpx
import tenacity

from api.schemas import (
    ChatCompletion, ChatCompletionRequest, DeleteDocumentsRequest, DocumentDeleted,
    DocumentDeletedList, DocumentPath, EmbeddingRequest, EmbeddingResponse, Health, ModelList,
)
from clients.retry import Attempts, HerServeError, RetryPolicy, retrying

DEFAULT_URL = "http://127.0.0.1:8000"
"""Serve's proxy on this node: on Panda, the phone daemon's own machine."""
CANCEL_DEADLINE_S = 5.0
"""A barge-in cancel that lands seconds late is useless: give up sooner."""
DEFAULT_SPEECH_MODEL = "kokoro"
"""OpenAI's speech API names a model in every request; Kokoro is every node's default voice."""


def urls_from_env(urls: str | list[str] | None = None) -> list[str]:
    """Base URLs from the argument, else ``HER_SERVE_URLS``, else this node's proxy."""
    if urls is None:
        urls = os.environ.get("HER_SERVE_URLS") or DEFAULT_URL
    if isinstance(urls, str):
        urls = urls.split(",")
    cleaned = [u.strip().rstrip("/") for u in urls if u.strip()]
    if not cleaned:
        raise ValueError("no base URL: pass urls=[...] or set HER_SERVE_URLS")
    bad = [u for u in cleaned if not u.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"base URLs need http:// or https://: {bad}")
    return cleaned


@dataclass(frozen=True)
class TTSAudio:
    """``/v1/tts``'s answer: raw little-endian int16 PCM and how to play it."""

    pcm: bytes
    sample_rate: int
    channels: int = 1
    engine: str | None = None
    """Which engine spoke (``X-TTS-Engine``), e.g. a fallback when Chatterbox is down."""

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


@dataclass(frozen=True)
class Call:
    """One HTTP call, described once for both clients."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any] = lambda r: r.json()
    json: Any = None
    files: dict | None = None
    data: dict | None = None
    idempotency_key: str | None = None
    deadline_s: float | None = None


def _json_or_text(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def _vectors(response: httpx.Response) -> list[list[float]]:
    body = EmbeddingResponse.model_validate(response.json())
    return [d.embedding for d in sorted(body.data, key=lambda d: d.index)]


def _tts_audio(response: httpx.Response) -> TTSAudio:
    return TTSAudio(
        pcm=response.content,
        sample_rate=int(response.headers.get("x-sample-rate", 24000)),
        channels=int(response.headers.get("x-channels", 1)),
        engine=response.headers.get("x-tts-engine"),
    )


class _Endpoints:
    """The API, written once. ``_call`` (``_Calls``'s) and ``_stream`` are sync or async
    per client, so on ``AsyncHerClient`` every method returns an awaitable (or an async
    iterator)."""

    def health(self) -> Health:
        return self._call(Call("GET", "/health", lambda r: Health.model_validate(r.json())))

    def models(self) -> ModelList:
        return self._call(Call("GET", "/v1/models", lambda r: ModelList.model_validate(r.json())))

    def status(self) -> dict:
        return self._call(Call("GET", "/v1/status"))

    def embed(
        self,
        texts: str | list[str],
        model: str | None = None,
        input_type: str = "document",
        idempotency_key: str | None = None,
    ) -> list[list[float]]:
        body = EmbeddingRequest(input=texts, model=model, input_type=input_type)
        return self._call(Call("POST", "/v1/embeddings", _vectors,
                               json=body.model_dump(exclude_none=True),
                               idempotency_key=idempotency_key))

    def chat(
        self,
        messages: list[dict],
        max_tokens: int | None = None,
        temperature: float = 1.0,
        stop: str | list[str] | None = None,
        retrieve: bool = False,
        k: int = 3,
        idempotency_key: str | None = None,
    ) -> ChatCompletion:
        """OpenAI's ``/v1/chat/completions``, the whole reply: the cluster's one chat model
        answers (``choices[0].message.content``; ``finish_reason`` ``length`` when cut).
        ``retrieve``: the top ``k`` of your documents for the last question go in its
        system prompt."""
        body = ChatCompletionRequest(messages=messages, max_tokens=max_tokens,
                                     temperature=temperature, stop=stop, retrieve=retrieve, k=k)
        return self._call(Call("POST", "/v1/chat/completions",
                               lambda r: ChatCompletion.model_validate(r.json()),
                               json=body.model_dump(exclude_defaults=True),
                               idempotency_key=idempotency_key))

    def tts(
        self,
        text: str,
        reference_audio: str | None = None,
        exaggeration: float = 0.3,
        cfg_weight: float = 0.3,
        temperature: float = 0.6,
        idempotency_key: str | None = None,
    ) -> TTSAudio:
        """The phone daemon's Chatterbox contract (production defaults)."""
        body = {"text": text, "reference_audio": reference_audio, "exaggeration": exaggeration,
                "cfg_weight": cfg_weight, "temperature": temperature}
        return self._call(Call("POST", "/v1/tts", _tts_audio, json=body,
                               idempotency_key=idempotency_key))

    def speech(
        self,
        text: str,
        voice: str,
        model: str = DEFAULT_SPEECH_MODEL,
        response_format: str = "wav",
        speed: float = 1.0,
        sample_rate: int | None = None,
        idempotency_key: str | None = None,
    ) -> bytes:
        """OpenAI's ``/v1/audio/speech``: the whole file at once. ``model`` is ``kokoro``,
        ``piper``, ``chatterbox`` or one of OpenAI's names (Kokoro)."""
        return self._call(_speech_call(text, voice, model, response_format, speed, sample_rate,
                                       idempotency_key))

    def stream_speech(
        self,
        text: str,
        voice: str,
        model: str = DEFAULT_SPEECH_MODEL,
        response_format: str = "pcm",
        speed: float = 1.0,
        sample_rate: int | None = None,
        idempotency_key: str | None = None,
    ) -> Iterator[bytes]:
        """Audio chunks as they are made. Retried only until the first byte arrives;
        nothing is sent before the iteration starts."""
        return self._stream(_speech_call(text, voice, model, response_format, speed,
                                         sample_rate, idempotency_key))

    def transcribe(
        self,
        audio: bytes,
        filename: str = "audio.wav",
        language: str | None = None,
        response_format: str = "json",
        idempotency_key: str | None = None,
    ) -> dict | str:
        """OpenAI's ``/v1/audio/transcriptions``: a dict for json formats, else the text."""
        data = {"response_format": response_format}
        if language:
            data["language"] = language
        return self._call(Call("POST", "/v1/audio/transcriptions", _json_or_text,
                               files={"file": (filename, audio)}, data=data,
                               idempotency_key=idempotency_key))

    def cancel(self) -> Any:
        """Barge-in: stop the running synthesis."""
        return self._call(Call("POST", "/cancel", _json_or_text, deadline_s=CANCEL_DEADLINE_S))

    def retrieve(
        self, query: str, k: int = 10, hops: int = 1, idempotency_key: str | None = None
    ) -> dict:
        return self._call(Call("POST", "/v1/retrieve", json={"query": query, "k": k, "hops": hops},
                               idempotency_key=idempotency_key))

    def ingest(self, documents: list[dict], idempotency_key: str | None = None) -> dict:
        """Documents are ``{"id", "text", "metadata"}``; a retried ingest keeps its key."""
        return self._call(Call("POST", "/v1/ingest", json={"documents": documents},
                               idempotency_key=idempotency_key))

    def forget(self, ids: str | list[str], idempotency_key: str | None = None
               ) -> list[DocumentDeleted]:
        """Forget documents everywhere the cluster keeps them, one result per id in order
        (``deleted=False``: no store held it). One id is ``DELETE /v1/documents/{id}``,
        several one ``POST /v1/documents/delete``. Safe to retry: the server deletes
        all or nothing, and an absent id is no error."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        if len(ids) == 1:
            doc = DocumentPath(id=ids[0])
            return self._call(Call("DELETE", f"/v1/documents/{quote(doc.id, safe='')}",
                                   _deleted(ids, bulk=False), idempotency_key=idempotency_key))
        body = DeleteDocumentsRequest(ids=ids)
        return self._call(Call("POST", "/v1/documents/delete", _deleted(ids, bulk=True),
                               json=body.model_dump(), idempotency_key=idempotency_key))

    def _stream(self, call: Call) -> Any:
        raise NotImplementedError


def _deleted(ids: list[str], bulk: bool) -> Callable[[httpx.Response], list[DocumentDeleted]]:
    """Reads a forget answer (one ``document.deleted``, or for ``bulk`` a list of them)
    and checks that it speaks of exactly the ids asked for, in order."""

    def parse(response: httpx.Response) -> list[DocumentDeleted]:
        if bulk:
            results = DocumentDeletedList.model_validate(response.json()).data
        else:
            results = [DocumentDeleted.model_validate(response.json())]
        answered = [r.id for r in results]
        if answered != ids:
            raise ValueError(f"asked to forget {ids}, the answer is about {answered}")
        return results

    return parse


def _speech_call(text, voice, model, response_format, speed, sample_rate, idempotency_key
                 ) -> Call:
    body = {"model": model, "input": text, "voice": voice, "response_format": response_format,
            "speed": speed}
    if sample_rate is not None:
        body["sample_rate"] = sample_rate
    return Call("POST", "/v1/audio/speech", lambda r: r.content, json=body,
                idempotency_key=idempotency_key)


class _Calls:
    """What both clients share: URLs, token, policy, per-call headers, and the call
    itself (tenacity's retry loop around the client's own ``_attempt``)."""

    _retrying: type[tenacity.BaseRetrying]
    """tenacity's loop for this client: ``Retrying`` (blocking) or ``AsyncRetrying``."""

    def __init__(
        self,
        urls: str | list[str] | None = None,
        token: str | None = None,
        policy: RetryPolicy | None = None,
    ):
        self.urls = urls_from_env(urls)
        self.token = token if token is not None else os.environ.get("HER_SERVE_TOKEN", "")
        self.policy = policy or RetryPolicy()

    def _call(self, call: Call) -> Any:
        """The parsed answer (awaitable on ``AsyncHerClient``)."""
        return self._send(call, stream=False)

    def _send(self, call: Call, stream: bool):
        """Every call's retry loop: the parsed answer, or for a stream an ``OpenStream``."""
        headers = self._headers(call)
        return retrying(self._retrying)(self._attempt, call, headers, self._attempts(call), stream)

    def _attempt(self, call: Call, headers: dict[str, str], attempts: Attempts, stream: bool):
        raise NotImplementedError

    def _attempts(self, call: Call) -> Attempts:
        policy = self.policy
        if call.deadline_s is not None:
            policy = replace(policy, deadline_s=min(policy.deadline_s, call.deadline_s))
        return policy.start(self.urls)

    def _headers(self, call: Call) -> dict[str, str]:
        headers = {
            "Idempotency-Key": call.idempotency_key or str(uuid.uuid4()),
            "X-Request-ID": uuid.uuid4().hex,
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _request(self, call: Call, headers: dict[str, str], attempts: Attempts) -> httpx.Request:
        """The next attempt's request: its URL and timeouts come from ``attempts``."""
        url, timeout = attempts.next()
        return self._http.build_request(call.method, url + call.path, json=call.json,
                                        files=call.files, data=call.data, headers=headers,
                                        timeout=timeout)

    @staticmethod
    @contextmanager
    def _transport_failures(attempts: Attempts, headers: dict[str, str]) -> Iterator[None]:
        """A network failure inside becomes a retry, or the final error."""
        try:
            yield
        except httpx.TransportError as exc:
            raise attempts.try_again(error=exc, request_id=headers["X-Request-ID"]) from exc

    @staticmethod
    def _answer(call: Call, response: httpx.Response, headers: dict[str, str],
                attempts: Attempts) -> Any:
        """A read response's outcome: the parsed answer, a retry, or the final error."""
        if not response.is_success:
            raise attempts.try_again(response=response, request_id=headers["X-Request-ID"])
        try:
            return call.parse(response)
        except (ValueError, KeyError, TypeError) as exc:  # a body that breaks the contract
            raise HerServeError(
                f"unexpected answer from {call.method} {call.path}: {exc}",
                status=response.status_code, type="bad_response",
                url=str(response.request.url), request_id=headers["X-Request-ID"],
            ) from exc


@dataclass(frozen=True)
class OpenStream:
    """A stream that answered: its first chunk is in, the rest is not retried."""

    response: httpx.Response
    chunks: Iterator[bytes] | AsyncIterator[bytes]
    first: bytes
    request_id: str

    def broken(self, exc: httpx.TransportError) -> HerServeError:
        return HerServeError(f"stream broke after the first byte ({type(exc).__name__}: {exc}); "
                             "not retried", type="connection_error", request_id=self.request_id)


class HerClient(_Calls, _Endpoints):
    """Blocking client. ``with HerClient() as c: c.embed(["hello"])``."""

    _retrying = tenacity.Retrying

    def __init__(self, urls: str | list[str] | None = None, token: str | None = None,
                 policy: RetryPolicy | None = None, **httpx_kwargs):
        super().__init__(urls, token, policy)
        self._http = httpx.Client(**httpx_kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "HerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _attempt(self, call: Call, headers: dict[str, str], attempts: Attempts, stream: bool):
        """One try: a successful stream up to its first chunk, anything else read whole."""
        with self._transport_failures(attempts, headers):
            response = self._http.send(self._request(call, headers, attempts), stream=stream)
            try:
                if stream and response.is_success:
                    chunks = response.iter_bytes()
                    return OpenStream(response, chunks, next(chunks, b""),
                                      headers["X-Request-ID"])
                response.read()
            except BaseException:
                response.close()
                raise
        return self._answer(call, response, headers, attempts)

    def _stream(self, call: Call) -> Iterator[bytes]:
        opened = self._send(call, stream=True)
        try:
            if opened.first:
                yield opened.first
            yield from opened.chunks
        except httpx.TransportError as exc:
            raise opened.broken(exc) from exc
        finally:
            opened.response.close()


class AsyncHerClient(_Calls, _Endpoints):
    """Asyncio client: the same methods as ``HerClient``, each awaited
    (``stream_speech`` is an async iterator)."""

    _retrying = tenacity.AsyncRetrying

    def __init__(self, urls: str | list[str] | None = None, token: str | None = None,
                 policy: RetryPolicy | None = None, **httpx_kwargs):
        super().__init__(urls, token, policy)
        self._http = httpx.AsyncClient(**httpx_kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncHerClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _attempt(self, call: Call, headers: dict[str, str], attempts: Attempts,
                       stream: bool):
        """One try: a successful stream up to its first chunk, anything else read whole."""
        with self._transport_failures(attempts, headers):
            response = await self._http.send(self._request(call, headers, attempts),
                                             stream=stream)
            try:
                if stream and response.is_success:
                    chunks = response.aiter_bytes()
                    return OpenStream(response, chunks, await anext(chunks, b""),
                                      headers["X-Request-ID"])
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return self._answer(call, response, headers, attempts)

    async def _stream(self, call: Call) -> AsyncIterator[bytes]:
        opened = await self._send(call, stream=True)
        try:
            if opened.first:
                yield opened.first
            async for chunk in opened.chunks:
                yield chunk
        except httpx.TransportError as exc:
            raise opened.broken(exc) from exc
        finally:
            await opened.response.aclose()
