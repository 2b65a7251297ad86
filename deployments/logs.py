"""Keep secrets and audio out of the logs.

Serve writes JSON log lines (``logging_config`` in ``serve_config.yaml``) that
carry each request's ``request_id``; this filter makes sure a token or a blob of
audio that reaches a log call is replaced before any handler writes it.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import threading
import time

REDACTED = "[REDACTED]"
SERVE_LOGGER = "ray.serve"
FLUSH_EVERY_S = 1.0
"""How stale a buffered request log may get (``RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE``)."""

# "Authorization: Bearer abc", "x-internal-token=abc", "'token': 'abc'", "Bearer abc".
_SECRET = re.compile(
    r"(?i)\b(authorization|x-internal-token|[a-z_]*token|api[_-]?key|secret|password)"
    r"(['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?[^\s'\",;}]+"
)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    """``text`` with token values replaced (the header or key name is kept)."""
    text = _SECRET.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}{REDACTED}", text)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


def _describe_blob(value: object) -> object:
    """Raw bytes and arrays (audio, PCM, embeddings) become their size only."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    shape = getattr(value, "shape", None)
    if shape is not None and getattr(value, "dtype", None) is not None:
        return f"<array shape={tuple(shape)} dtype={value.dtype}>"
    return value


_TRACEBACKS = logging.Formatter()


class RedactSecrets(logging.Filter):
    """Renders the message (and traceback) with blobs described, then redacts token values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            args: object = {k: _describe_blob(v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            args = tuple(_describe_blob(a) for a in record.args)
        else:
            args = record.args
        message = _describe_blob(record.msg)
        try:
            text = str(message) % args if args else str(message)
        except (TypeError, ValueError):  # a malformed log call: keep what it said
            text = f"{message} {args}"
        record.msg, record.args = redact(text), None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text, so the traceback is written redacted too.
            record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))
        return True


_FILTER = RedactSecrets()


def install_redaction(logger_name: str = SERVE_LOGGER) -> None:
    """Attach the filter to the Serve logger and its handlers (idempotent).

    On the logger for its own calls, on the handlers for child loggers'
    records that propagate to them. Call it in every replica's ``__init__``:
    Serve sets up the handlers before user code runs. Also starts the flusher
    of Serve's buffered request log.
    """
    logger = logging.getLogger(logger_name)
    for target in (logger, *logger.handlers):
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
    _start_flusher(logger)


_flusher: threading.Thread | None = None


def _start_flusher(logger: logging.Logger) -> None:
    """Flush Serve's buffered log handlers every second (one thread per process).

    In throughput-optimized mode Serve buffers request-path log lines in a
    ``MemoryHandler`` and writes them only when 1000 are waiting or an ERROR
    comes: on a quiet replica a request's lines could wait for hours.
    """
    global _flusher
    buffers = [h for h in logger.handlers if isinstance(h, logging.handlers.MemoryHandler)]
    if not buffers or _flusher is not None:
        return

    def flush_forever() -> None:
        while True:
            time.sleep(FLUSH_EVERY_S)
            for handler in buffers:
                handler.flush()

    _flusher = threading.Thread(target=flush_forever, name="log-flusher", daemon=True)
    _flusher.start()
