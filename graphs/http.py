"""HTTP plumbing shared by every route: JSON errors, bounded bodies, auth.

Every failure a client can cause becomes a 4xx with OpenAI's error envelope;
nothing here lets a bad request reach a model.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from graphs.schemas import ErrorDetail, ErrorResponse

log = logging.getLogger("ray.serve")

M = TypeVar("M", bound=BaseModel)


class APIError(Exception):
    """An error with an HTTP status, rendered as OpenAI's error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = ErrorResponse(error=self.detail).model_dump(exclude_none=True)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def root_cause(exc: BaseException) -> BaseException:
    """The replica's own exception inside Ray's RayTaskError wrappers (one per hop)."""
    while isinstance(getattr(exc, "cause", None), BaseException):
        exc = exc.cause
    return exc


def unavailable(deployment: str, reason: str) -> APIError:
    return APIError(
        503, f"{deployment} is not running: {reason}", type="unavailable", code="model_unavailable"
    )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) anything over ``max_bytes`` before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise APIError(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_json(request: Request, model: type[M], max_bytes: int) -> M:
    """Parse and validate a JSON body into ``model``, or raise a 4xx APIError."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise APIError(415, f"content-type must be application/json, not {ctype or 'missing'!r}")
    raw = await read_body(request, max_bytes)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"malformed JSON: {exc}") from None
    return validate(model, data)


FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields


async def read_audio_form(
    request: Request, max_bytes: int, model: type[M], list_fields: tuple[str, ...] = ()
) -> tuple[bytes, M]:
    """A multipart upload: the ``file`` field's bytes (bounded) and the other fields as ``model``.

    ``list_fields`` may repeat, as ``name`` or ``name[]`` (OpenAI's form style).
    """
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise APIError(415, f"content-type must be multipart/form-data, not {ctype or 'missing'!r}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD:
        raise APIError(413, f"upload is {declared} bytes; the audio limit is {max_bytes}")
    try:
        form = await request.form(max_files=1, max_fields=32)
    except (MultiPartException, HTTPException) as exc:  # Starlette wraps parser errors in a 400
        raise APIError(400, f"malformed multipart body: {getattr(exc, 'detail', exc)}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise APIError(400, "missing the 'file' field (the audio)", param="file")
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise APIError(413, f"audio exceeds the limit of {max_bytes} bytes", param="file")
    fields: dict = {k: v for k, v in form.multi_items() if k != "file" and isinstance(v, str)}
    for name in list_fields:
        values = form.getlist(f"{name}[]") or form.getlist(name)
        fields.pop(f"{name}[]", None)
        if values:
            fields[name] = values
    return data, validate(model, fields)


def validate(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        msg = f"{where}: {first['msg']}" if where else first["msg"]
        more = len(exc.errors()) - 1
        raise APIError(
            422 if where else 400, msg + (f" (and {more} more)" if more else ""), param=where
        ) from None


class TokenAuth:
    """ASGI middleware: a bearer or X-Internal-Token for every path but the open ones.

    Without a configured token only loopback clients are served, so an
    unconfigured cluster is never open to the network.
    """

    OPEN_PATHS = frozenset({"/health"})

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token.encode()
        if not token:
            log.warning("no SERVE_AUTH__TOKEN configured: serving loopback clients only")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        error = self._check(scope)
        if error is not None:
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> APIError | None:
        if not self.token:
            client = (scope.get("client") or ("",))[0]
            if _is_loopback(client):
                return None
            return APIError(
                403,
                "no auth token is configured on this server, so it serves loopback clients only",
                type="permission_error",
            )
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        presented = headers.get("x-internal-token", b"")
        auth = headers.get("authorization", b"")
        if not presented and auth[:7].lower() == b"bearer ":
            presented = auth[7:].strip()
        if not presented:
            return APIError(
                401,
                "missing token: send 'Authorization: Bearer <token>' or 'X-Internal-Token'",
                type="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(presented, self.token):
            return APIError(401, "invalid token", type="authentication_error")
        return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class RouteTimeout:
    """ASGI middleware: a response must *start* within its route's deadline, or 504 JSON.

    Once the first byte is out (a stream has begun) the deadline no longer
    applies; streams have per-step deadlines of their own.
    """

    def __init__(self, app: ASGIApp, default_s: float, per_prefix: dict[str, float] | None = None):
        self.app = app
        self.default_s = default_s
        self.per_prefix = sorted((per_prefix or {}).items(), key=lambda kv: -len(kv[0]))

    def deadline(self, path: str) -> float:
        return next((s for prefix, s in self.per_prefix if path.startswith(prefix)), self.default_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def send_marking(message) -> None:
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, send_marking))
        waiter = asyncio.ensure_future(started.wait())
        deadline = self.deadline(scope["path"])
        done, _ = await asyncio.wait({task, waiter}, timeout=deadline,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await APIError(
                504, f"no response within {deadline:g} s", type="timeout",
                headers={"Retry-After": "1"},
            ).response()(scope, receive, send)
            return
        await task
