"""HTTP plumbing shared by every route: JSON errors, bounded bodies, strict JSON, auth.

Every failure a client can cause becomes a 4xx with OpenAI's error envelope;
nothing here lets a bad request reach a model. Routes are FastAPI routes of
class ``EdgeRoute``: their bodies are bounded while they are read and parsed
by ``strict_json``, the one JSON parser of the edge.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
from typing import AsyncIterator, Callable, Iterable, TypeVar

import numpy as np
import orjson
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.schemas import ErrorDetail, ErrorResponse

log = logging.getLogger("ray.serve")

M = TypeVar("M", bound=BaseModel)

DEFAULT_BODY_BYTES = 64 * 1024
"""Body limit of a route that names none (``body_limit``)."""
BODY_LIMIT_KEY = "x-max-body-bytes"
"""Where a route states its body limit: its OpenAPI operation, so /docs shows it too."""
OFF_LOOP_BYTES = 16 * 1024
"""Bodies above this are parsed and validated in a worker thread, so the event loop never
stalls on them (pydantic spends ~2 us per error it reports)."""
MAX_JSON_DEPTH = 32
MAX_JSON_VALUES = 50_000
"""Every array item, object member and scalar counts (``json_value_bound``, before parsing).
Bounds the time any one call into the parser or validator holds the GIL (a few ms), which a
thread cannot take off the loop."""
MAX_ERROR_CHARS = 2000


class APIError(HTTPException):
    """An error with an HTTP status, rendered as OpenAI's error JSON.

    A Starlette HTTPException, so FastAPI lets it through while it reads a body.
    """

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
        if len(message) > MAX_ERROR_CHARS:  # messages may quote what the client sent
            message = message[:MAX_ERROR_CHARS] + "..."
        super().__init__(status, message, headers)
        self.status = status
        self.error = ErrorDetail(message=message, type=type, param=param, code=code)

    def response(self) -> JSONResponse:
        body = ErrorResponse(error=self.error).model_dump(exclude_none=True)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def root_cause(exc: BaseException) -> BaseException:
    """The replica's own exception inside Ray's RayTaskError wrappers (one per hop)."""
    while isinstance(getattr(exc, "cause", None), BaseException):
        exc = exc.cause
    return exc


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PATH = re.compile(r"(?<![\w.:/])(?:~|[A-Za-z]:)?(?:[\\/][\w.@+%-]+){2,}[\\/]?")
_ADDRESS = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|(?<![\w:])[0-9a-fA-F]{0,4}::[0-9a-fA-F:]*(?![\w:])")
_HEX_ID = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{16,}\b")
_PID = re.compile(r"(?i)\b(pid[=: ]+)\d+")
MAX_MESSAGE_CHARS = 500


def scrub(message: str, known: dict[str, str] | None = None) -> str:
    """A message fit for a client: its first line, without paths, addresses, ids or colours.

    ``known`` names absolute paths worth keeping as a name (the model cache's
    root becomes ``$SERVE_MODEL_CACHE``); every other path becomes ``<path>``.
    """
    text = _ANSI.sub("", message).strip()
    text = text.splitlines()[0] if text else ""
    for path, name in (known or {}).items():
        if path:
            text = text.replace(path, name)
    text = _PATH.sub("<path>", text)
    text = _ADDRESS.sub("<address>", text)
    text = _HEX_ID.sub("<id>", text)
    text = _PID.sub(r"\g<1><pid>", text)
    return text[:MAX_MESSAGE_CHARS]


def unavailable(deployment: str, reason: str) -> APIError:
    return APIError(
        503, f"{deployment} is not running: {reason}", type="unavailable", code="model_unavailable"
    )


def body_limit(max_bytes: int) -> dict:
    """A route's ``openapi_extra`` stating its body limit (enforced by ``EdgeRoute``)."""
    return {BODY_LIMIT_KEY: max_bytes}


def json_shape_error(data: object) -> str | None:
    """Why a parsed JSON document is refused (too deep, a NUL), or None.

    Iterative, so no depth can raise RecursionError here or later. The number of
    values was bounded before parsing (``strict_json``).
    """
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(value, dict):
                if any("\x00" in key for key in value):
                    return "a JSON key contains a NUL character"
                value = value.values()
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and "\x00" in value:
            return "a JSON string contains a NUL character"
    return None


def json_value_bound(raw: bytes) -> int:
    """At least as many as the values a JSON text holds, counted without parsing it.

    Every value but the first follows a comma outside a string or opens a container, so
    these bound the count from above (an empty container counts one too many). numpy
    finds them at ~1 ms per MB, mostly without the GIL; parsing a million numbers
    first would hold it for 50 ms and more (issue 12).
    """
    text = np.frombuffer(raw, np.uint8)
    quotes = np.flatnonzero(text == ord('"'))
    slashes = np.flatnonzero(text == ord("\\"))
    if quotes.size and slashes.size:  # a quote after an odd run of backslashes is escaped
        breaks = np.flatnonzero(np.diff(slashes) != 1)
        run_ends = np.append(slashes[breaks], slashes[-1])
        run_starts = np.insert(slashes[breaks + 1], 0, slashes[0])
        run = np.minimum(np.searchsorted(run_ends, quotes - 1), run_ends.size - 1)
        escaped = (run_ends[run] == quotes - 1) & ((run_ends[run] - run_starts[run]) % 2 == 0)
        quotes = quotes[~escaped]
    marks = np.flatnonzero((text == ord(",")) | (text == ord("[")) | (text == ord("{")))
    outside = np.searchsorted(quotes, marks) % 2 == 0  # an even number of quotes before it
    return 1 + int(np.count_nonzero(outside))


def strict_json(raw: bytes) -> object:
    """Parse a JSON body as RFC 8259 says, or raise a 400 APIError.

    orjson refuses what Python's json accepts and no store can hold: NaN and
    Infinity (also as 1e999), lone surrogates, invalid UTF-8. Its values are
    counted before it is parsed, so a flood of them is refused cheaply; each value
    takes at least a byte, so a body no longer than the limit need not be counted.
    """
    if len(raw) > MAX_JSON_VALUES and json_value_bound(raw) > MAX_JSON_VALUES:
        raise APIError(400, f"the JSON body holds more than {MAX_JSON_VALUES} values")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"malformed JSON: {exc}") from None
    problem = json_shape_error(data)
    if problem:
        raise APIError(400, problem)
    return data


def strict_json_valid(raw: bytes, model: type[BaseModel] | None) -> object:
    """``strict_json``, then the route's body model: a large refused body costs the loop nothing."""
    data = strict_json(raw)
    if model is not None:
        validate(model, data)
    return data


class EdgeRequest(Request):
    """A request whose body is bounded while it is read, and parsed by ``strict_json``."""

    def __init__(self, scope: Scope, receive: Receive, max_body_bytes: int,
                 model: type[BaseModel] | None = None):
        super().__init__(scope, receive)
        self.max_body_bytes = max_body_bytes
        self.model = model

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, refusing (413) anything over the limit: declared, before a byte is read."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise APIError(413, f"request body is {declared} bytes; the limit is {self.max_body_bytes}")
        size = 0
        async for chunk in super().stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise APIError(413, f"request body exceeds the limit of {self.max_body_bytes} bytes")
            yield chunk

    async def json(self) -> object:
        if not hasattr(self, "_json"):
            raw = await self.body()
            if len(raw) > OFF_LOOP_BYTES:
                self._json = await asyncio.to_thread(strict_json_valid, raw, self.model)
            else:
                self._json = strict_json(raw)
        return self._json


class EdgeRoute(APIRoute):
    """Every gateway route: bounded body, JSON content type checked, strict JSON.

    The limit comes from the route's ``openapi_extra`` (``body_limit``); a
    multipart route's dependency sets its own before it reads the form.
    """

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        limit = (self.openapi_extra or {}).get(BODY_LIMIT_KEY, DEFAULT_BODY_BYTES)
        wants_json = self.body_field is not None
        model = self.body_field.field_info.annotation if wants_json else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            model = None

        async def bounded(request: Request) -> Response:
            if wants_json:
                ctype = request.headers.get("content-type", "")
                if ctype.split(";")[0].strip().lower() != "application/json":
                    raise APIError(
                        415, f"content-type must be application/json, not {ctype or 'missing'!r}")
            return await handler(EdgeRequest(request.scope, request.receive, limit, model))

        return bounded


FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields


def multipart_body(form: type[BaseModel]) -> dict:
    """``openapi_extra`` describing a multipart body: the ``file`` and ``form``'s fields.

    The form is read by ``read_audio_form`` (bounded, validated by ``form``),
    so FastAPI does not see it; this tells /openapi.json what it takes.
    """
    schema = form.model_json_schema()
    schema["properties"] = {"file": {"type": "string", "format": "binary"}, **schema["properties"]}
    schema["required"] = ["file", *schema.get("required", [])]
    return {"requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": schema}}}}


async def read_audio_form(
    request: Request, max_bytes: int, model: type[M], list_fields: tuple[str, ...] = ()
) -> tuple[bytes, M]:
    """A multipart upload: the ``file`` field's bytes (bounded) and the other fields as ``model``.

    ``list_fields`` may repeat, as ``name`` or ``name[]`` (OpenAI's form style).
    """
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise APIError(415, f"content-type must be multipart/form-data, not {ctype or 'missing'!r}")
    if isinstance(request, EdgeRequest):
        request.max_body_bytes = max_bytes + FORM_OVERHEAD
    try:
        form = await request.form(max_files=1, max_fields=32)
    except MultiPartException as exc:
        raise APIError(400, f"malformed multipart body: {exc.message}") from None
    except APIError:
        raise
    except HTTPException as exc:  # Starlette wraps parser errors in a 400
        raise APIError(400, f"malformed multipart body: {exc.detail}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise APIError(400, "missing the 'file' field (the audio)", param="file")
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise APIError(413, f"audio exceeds the limit of {max_bytes} bytes", param="file")
    fields: dict = {k: v for k, v in form.multi_items() if k != "file" and isinstance(v, str)}
    if any("\x00" in f"{k}{v}" for k, v in fields.items()):
        raise APIError(400, "form fields must not contain NUL characters")
    for name in list_fields:
        values = form.getlist(f"{name}[]") or form.getlist(name)
        fields.pop(f"{name}[]", None)
        if values:
            fields[name] = values
    return data, validate(model, fields)


def validation_message(errors: list[dict], strip: tuple[str, ...] = ()) -> APIError:
    """One 4xx for pydantic's errors: the first one named, and how many more."""
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    while loc and loc[0] in strip:
        loc = loc[1:]
    where = ".".join(loc) or None
    msg = f"{where}: {first['msg']}" if where else first["msg"]
    more = len(errors) - 1
    return APIError(422 if where else 400, msg + (f" (and {more} more)" if more else ""),
                    param=where)


def validate(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_message(exc.errors()) from None


class TokenAuth:
    """ASGI middleware: a bearer or X-Internal-Token for every path but the open ones.

    Open: ``open_paths`` exactly, and everything under ``open_prefixes`` (each
    ending in ``/``): pages and documents that hold no data. Without a
    configured token only loopback clients are served, so an unconfigured
    cluster is never open to the network.
    """

    def __init__(self, app: ASGIApp, token: str, open_paths: Iterable[str] = ("/health",),
                 open_prefixes: Iterable[str] = ()):
        self.app = app
        self.token = token.encode()
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = tuple(open_prefixes)
        assert all(p.endswith("/") for p in self.open_prefixes), "an open prefix ends in /"
        if not token:
            log.warning("no SERVE_AUTH__TOKEN configured: serving loopback clients only")

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]):
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
        presented = credentials(scope.get("headers", []))
        if not presented:
            return APIError(
                401,
                "missing token: send 'Authorization: Bearer <token>' or 'X-Internal-Token'",
                type="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if len(presented) > 1:
            return APIError(401, "send exactly one credential: one Authorization or one "
                            "X-Internal-Token header", type="authentication_error")
        if not hmac.compare_digest(presented[0], self.token):
            return APIError(401, "invalid token", type="authentication_error")
        return None


def credentials(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """Every credential a request presents: one per Authorization or X-Internal-Token header.

    The one rule for both headers: the value is stripped of surrounding
    whitespace; ``Authorization`` must then read ``Bearer <token>`` (any case).
    A header that is present counts even when empty or malformed (it becomes
    ``b""``, which never matches), so a second header can never be ignored.
    """
    found = []
    for name, value in headers:
        name = name.lower()
        if name == b"x-internal-token":
            found.append(value.strip())
        elif name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            found.append(token.strip() if scheme.lower() == b"bearer" else b"")
    return found


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class HeaderLimits:
    """ASGI middleware: at most ``max_count`` request headers of at most ``max_bytes`` in all, or 431.

    Checked before anything else reads them (auth, routing), so an oversize
    header costs nothing further.
    """

    def __init__(self, app: ASGIApp, max_count: int = 64, max_bytes: int = 16 * 1024):
        self.app = app
        self.max_count = max_count
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers", [])
            size = sum(len(k) + len(v) for k, v in headers)
            if len(headers) > self.max_count or size > self.max_bytes:
                error = APIError(431, f"request headers are {len(headers)} fields, {size} bytes; "
                                 f"the limits are {self.max_count} fields, {self.max_bytes} bytes")
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
        """One timer per request, no extra tasks: on expiry the request's own task is cancelled."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = timed_out = False
        task = asyncio.current_task()

        def expire() -> None:
            nonlocal timed_out
            if not started:
                timed_out = True
                task.cancel()

        async def send_marking(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        deadline = self.deadline(scope["path"])
        timer = asyncio.get_running_loop().call_later(deadline, expire)
        try:
            await self.app(scope, receive, send_marking)
        except asyncio.CancelledError:
            if not timed_out:
                raise
            task.uncancel()
        finally:
            timer.cancel()
        if timed_out and not started:
            await APIError(
                504, f"no response within {deadline:g} s", type="timeout",
                headers={"Retry-After": "1"},
            ).response()(scope, receive, send)
