"""No tokens and no audio bytes reach a log handler."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest

from deployments.logs import REDACTED, install_redaction, redact

TOKEN = "s3cret-t0ken-value"


@pytest.fixture
def captured():
    """A real logger and handler named like Serve's children, as replicas log."""
    logger = logging.getLogger("her-test.redaction")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    install_redaction(logger.name)
    yield logger, stream
    logger.removeHandler(handler)


@pytest.mark.parametrize(
    "line",
    [
        f"Authorization: Bearer {TOKEN}",
        f"authorization=Bearer {TOKEN}",
        f"X-Internal-Token: {TOKEN}",
        f"{{'x-internal-token': '{TOKEN}', 'accept': 'json'}}",
        f'{{"api_key": "{TOKEN}"}}',
        f"SERVE_AUTH__TOKEN={TOKEN}",
        f"calling with bearer {TOKEN} now",
    ],
)
def test_redact_removes_token_values(line):
    out = redact(line)
    assert TOKEN not in out
    assert REDACTED in out


def test_redact_keeps_ordinary_text():
    line = "embedded 12 texts for request 4f1c in 9.3 ms"
    assert redact(line) == line


def test_logged_headers_and_audio_are_redacted(captured):
    logger, stream = captured
    pcm = (np.sin(np.arange(24000)) * 3000).astype(np.int16)
    logger.info("headers %s", {"authorization": f"Bearer {TOKEN}"})
    logger.info("tts body %r", pcm.tobytes())
    logger.info("clip %s", pcm)
    logger.warning("X-Internal-Token: %s rejected", TOKEN)
    text = stream.getvalue()
    assert TOKEN not in text
    assert "<48000 bytes>" in text
    assert "<array shape=(24000,) dtype=int16>" in text
    assert pcm.tobytes()[:16].hex() not in text and "\\x" not in text


def test_install_is_idempotent(captured):
    logger, stream = captured
    install_redaction(logger.name)
    logger.info("once")
    assert stream.getvalue() == "once\n"


def test_traceback_text_is_redacted(captured):
    logger, stream = captured
    try:
        raise PermissionError(f"upstream refused Authorization: Bearer {TOKEN}")
    except PermissionError:
        logger.exception("call failed")
    text = stream.getvalue()
    assert "PermissionError" in text and "Traceback" in text
    assert TOKEN not in text
