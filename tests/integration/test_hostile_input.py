"""Hostile and careless input against every route of the shared test cluster (issue 12).

Cases are generated per route and per field type: wrong types, non-finite numbers, deep
nesting, huge values, unicode edge cases, NUL and binary data, traversal, the audio edge
cases, header bounds, duplicate credentials, unknown paths and methods. Each one must get
a 4xx in OpenAI's error envelope, with nothing internal in it, within a few seconds; the
server must still answer /health afterwards.
"""

from __future__ import annotations

import io
import re
import threading
import time
import wave
from dataclasses import dataclass, field

import httpx
import pytest

from deployments.audio import MIN_RATE
from tests.speechkit import espeak_wav


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    ctype: str = "application/json"
    files: dict | None = None
    data: dict | None = None
    headers: list = field(default_factory=list)
    auth: bool = True


# A valid body per JSON route, and the type of each field to corrupt.
JSON_ROUTES = {
    "/v1/embeddings": ({"input": "hello"}, {
        "input": "str", "model": "str", "encoding_format": "enum", "dimensions": "int",
        "user": "str", "input_type": "enum"}),
    "/v1/ner": ({"texts": ["Ann met Bob in Paris"], "labels": ["person"]}, {
        "texts": "list", "labels": "list", "threshold": "float"}),
    "/v1/retrieve": ({"query": "who is Ann"}, {
        "query": "str", "k": "int", "hops": "int", "labels": "list"}),
    "/v1/ingest": ({"documents": [{"id": "hostile-1", "text": "A quiet document."}]}, {
        "documents": "list"}),
    "/v1/tts": ({"text": "hi"}, {
        "text": "str", "reference_audio": "str", "exaggeration": "float", "cfg_weight": "float",
        "temperature": "float", "sample_rate": "int"}),
    "/v1/audio/speech": ({"model": "kokoro", "input": "hi", "voice": "alloy"}, {
        "model": "str", "input": "str", "voice": "str", "instructions": "str",
        "response_format": "enum", "speed": "float", "stream_format": "enum",
        "sample_rate": "int"}),
    "/v1/voice/cancel": ({"turn_id": "nobody-here"}, {"turn_id": "str"}),
    "/v1/documents/delete": ({"ids": ["hostile-absent"]}, {"ids": "list"}),
}
LENIENT = ("/v1/tts", "/v1/audio/speech")
"""Accept unknown fields, as the phone daemon's and OpenAI's servers do."""
DOCUMENT_FIELDS = {"id": "str", "text": "str", "metadata": "dict", "kind": "enum"}
WRONG = {
    "str": [123, {"a": 1}], "enum": [5, ["float"]], "int": ["abc", [1]],
    "float": ["abc", {"x": 1}], "list": ["abc", 5], "dict": [[1], "abc"],
}
NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e999"]


def dumps(value) -> bytes:
    import json

    return json.dumps(value).encode()


def with_raw(base: dict, name: str, raw: bytes) -> bytes:
    """``base`` as JSON with field ``name`` set to the raw JSON text ``raw``."""
    marker = "__RAW__"
    return dumps({**base, name: marker}).replace(b'"' + marker.encode() + b'"', raw)


def json_cases() -> list[Case]:
    cases = []
    deep = b"[" * 200 + b"]" * 200
    very_deep = b"[" * 100_000 + b"]" * 100_000
    for path, (base, fields) in JSON_ROUTES.items():
        for name, kind in fields.items():
            for i, wrong in enumerate(WRONG[kind]):
                cases.append(Case(f"wrong type {path} {name} #{i}", "POST", path,
                                  dumps({**base, name: wrong})))
            if kind in ("int", "float"):
                cases += [Case(f"non-finite {path} {name} {raw.decode()}", "POST", path,
                               with_raw(base, name, raw)) for raw in NON_FINITE]
                cases.append(Case(f"huge number {path} {name}", "POST", path,
                                  with_raw(base, name, b"1" + b"0" * 40)))
            if kind in ("str", "enum"):
                cases += [
                    Case(f"lone surrogate {path} {name}", "POST", path,
                         with_raw(base, name, b'"a\\ud800b"')),
                    Case(f"invalid utf-8 {path} {name}", "POST", path,
                         with_raw(base, name, b'"a\xed\xa0\x80b"')),
                    Case(f"NUL {path} {name}", "POST", path, with_raw(base, name, b'"a\\u0000b"')),
                ]
            if kind == "str":
                cases.append(Case(f"1 MB string {path} {name}", "POST", path,
                                  dumps({**base, name: "a" * 1_000_000})))
        cases += [
            Case(f"deep nesting {path}", "POST", path, with_raw(base, next(iter(fields)), deep)),
            Case(f"very deep nesting {path}", "POST", path, very_deep),
            Case(f"binary body {path}", "POST", path, bytes(range(256)) * 4),
            Case(f"truncated JSON {path}", "POST", path, dumps(base)[:-1]),
            Case(f"NaN at top level {path}", "POST", path, b"NaN"),
            Case(f"not an object {path}", "POST", path, b'["a", 1]'),
            Case(f"text/plain {path}", "POST", path, dumps(base), ctype="text/plain"),
            Case(f"wrong method {path}", "GET", path),
        ]
        if path not in LENIENT:
            cases.append(Case(f"unknown field {path}", "POST", path, dumps({**base, "bogus\u202e": 1})))
    doc = JSON_ROUTES["/v1/ingest"][0]["documents"][0]
    for name, kind in DOCUMENT_FIELDS.items():
        for i, wrong in enumerate(WRONG[kind]):
            cases.append(Case(f"wrong type ingest document {name} #{i}", "POST", "/v1/ingest",
                              dumps({"documents": [{**doc, name: wrong}]})))
    nested: dict = {}
    cursor = nested
    for _ in range(20):
        cursor["a"] = {}
        cursor = cursor["a"]
    for name, metadata in [
        ("NaN", b'{"score": NaN}'), ("Infinity", b'{"score": [1, Infinity]}'),
        ("NUL", b'{"note": "a\\u0000b"}'), ("NUL key", b'{"a\\u0000": 1}'),
        ("lone surrogate", b'{"note": "\\udfff"}'), ("64 KB", dumps({"blob": "x" * 65_536})),
        ("20 levels", dumps(nested)), ("a list", b"[1, 2]"),
    ]:
        body = dumps({"documents": [{**doc, "metadata": "__M__"}]}).replace(b'"__M__"', metadata)
        cases.append(Case(f"ingest metadata {name}", "POST", "/v1/ingest", body))
    cases += [
        Case("zero-width-only input", "POST", "/v1/embeddings", dumps({"input": "\u200b\u200d\ufeff"})),
        Case("RTL override model name", "POST", "/v1/embeddings",
             dumps({"input": "x", "model": "\u202eLM-iniM"})),
        Case("zero-width voice", "POST", "/v1/audio/speech",
             dumps({"model": "kokoro", "input": "hi", "voice": "al\u200bloy"})),
        Case("RTL label", "POST", "/v1/retrieve", dumps({"query": "x", "labels": ["\u202enosrep"]})),
        Case("huge dimensions", "POST", "/v1/embeddings", dumps({"input": "x", "dimensions": 10**9})),
        Case("10,000 NER texts", "POST", "/v1/ner", dumps({"texts": ["a"] * 10_000, "labels": ["x"]})),
        Case("million-integer input", "POST", "/v1/embeddings", dumps({"input": list(range(10**6))})),
        Case("duplicate ingest ids", "POST", "/v1/ingest", dumps({"documents": [doc, doc]})),
    ]
    for ref in ["../../etc/passwd", "..\\..\\boot.ini", "/etc/passwd", "voice.wav/../x",
                "%2e%2e%2fsecret", "C:secret.wav", ".hidden.wav", "voice\u202ewav.exe", "a\u0000.wav"]:
        cases.append(Case(f"traversal reference_audio {ref!r}", "POST", "/v1/tts",
                          dumps({"text": "hi", "reference_audio": ref})))
    for turn_id in ["../x", "a/b", "x" * 65, "\u200b", "a b"]:
        cases.append(Case(f"bad turn_id {turn_id[:10]!r}", "POST", "/v1/voice/turn",
                          files={"file": ("a.wav", b"RIFF", "audio/wav")}, data={"turn_id": turn_id}))
    return cases


def wav_bytes(samples: bytes, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return buffer.getvalue()


def audio_cases() -> list[Case]:
    too_long = bytes(2 * MIN_RATE * 601)  # 601 s of raw PCM at the lowest rate
    uploads = [
        ("empty file", b"", {}),
        ("non-audio", b"%PDF-1.7 not audio at all" * 40, {}),
        ("zero-sample WAV", wav_bytes(b""), {}),
        ("truncated WAV header", wav_bytes(bytes(3200))[:30], {}),
        ("PCM rate 0", bytes(3200), {"sample_rate": "0"}),
        ("PCM rate negative", bytes(3200), {"sample_rate": "-16000"}),
        ("PCM rate huge", bytes(3200), {"sample_rate": str(10**12)}),
        ("PCM rate not a number", bytes(3200), {"sample_rate": "fast"}),
        ("PCM rate NaN", bytes(3200), {"sample_rate": "NaN"}),
        ("PCM odd length", bytes(3201), {"sample_rate": "16000"}),
        ("over-length audio", too_long, {"sample_rate": str(MIN_RATE)}),
    ]
    cases = []
    for path in ("/v1/audio/transcriptions", "/v1/voice/turn"):
        for name, data, fields in uploads:
            extra = {"engine": "piper"} if path == "/v1/voice/turn" else {}
            cases.append(Case(f"{name} {path}", "POST", path,
                              files={"file": ("clip.wav", data, "audio/wav")}, data={**fields, **extra}))
        cases += [
            Case(f"no file {path}", "POST", path, files={"notes": ("n.txt", b"hi", "text/plain")}),
            Case(f"not multipart {path}", "POST", path, dumps({"file": "x"})),
            Case(f"malformed multipart {path}", "POST", path, b"--x\r\ngarbage",
                 ctype="multipart/form-data; boundary=x"),
            Case(f"NUL form field {path}", "POST", path, files={"file": ("a.wav", b"RIFF", "audio/wav")},
                 data={"language": "en\u0000"}),
            Case(f"unknown form field {path}", "POST", path,
                 files={"file": ("a.wav", b"RIFF", "audio/wav")}, data={"bogus": "1"}),
        ]
    speech = espeak_wav("Hello there.", 16_000)
    for language in ["xx", "english", "\u202een", "e\u200bn"]:
        cases.append(Case(f"unknown language {language!r}", "POST", "/v1/audio/transcriptions",
                          files={"file": ("a.wav", speech, "audio/wav")}, data={"language": language}))
    for name, value in [("temperature", "inf"), ("temperature", "nan"), ("response_format", "xml"),
                        ("timestamp_granularities[]", "char")]:
        cases.append(Case(f"form {name}={value}", "POST", "/v1/audio/transcriptions",
                          files={"file": ("a.wav", speech, "audio/wav")}, data={name: value}))
    for name, value in [("speed", "Infinity"), ("k", "1e999"), ("output_sample_rate", "-1"),
                        ("max_tokens", "0"), ("max_tokens", "99999999999999999999")]:
        cases.append(Case(f"voice form {name}={value}", "POST", "/v1/voice/turn",
                          files={"file": ("a.wav", speech, "audio/wav")}, data={name: value}))
    return cases


def edge_cases() -> list[Case]:
    cases = [
        Case("1 MB header", "GET", "/v1/models", headers=[("X-Big", "a" * 1_000_000)]),
        Case("200 headers", "GET", "/v1/models", headers=[(f"X-H{i}", "v") for i in range(200)]),
        Case("unknown path", "GET", "/v1/nothing"),
        Case("traversal in the path", "GET", "/docs/assets/../../../etc/passwd"),
        Case("encoded traversal in the path", "GET", "/docs/assets/..%2f..%2fetc%2fpasswd"),
        Case("wrong method on /health", "POST", "/health", b"{}"),
        Case("wrong method on status", "DELETE", "/v1/status"),
        Case("NUL in a document id", "DELETE", "/v1/documents/a%00b"),
        Case("257-character document id", "DELETE", "/v1/documents/" + "a" * 257),
        Case("empty document id", "DELETE", "/v1/documents/"),
    ]
    for name, headers in [
        ("two bearers", [("Authorization", "Bearer {token}"), ("Authorization", "Bearer {token}")]),
        ("bearer and internal token", [("Authorization", "Bearer {token}"), ("X-Internal-Token", "{token}")]),
        ("bearer and empty internal token", [("Authorization", "Bearer {token}"), ("X-Internal-Token", "")]),
        ("wrong then right bearer", [("Authorization", "Bearer nope"), ("Authorization", "Bearer {token}")]),
        ("basic scheme", [("Authorization", "Basic {token}")]),
    ]:
        cases.append(Case(f"auth {name}", "GET", "/v1/models", headers=headers, auth=False))
    return cases


CASES = json_cases() + audio_cases() + edge_cases()
INTERNAL = re.compile(
    r"Traceback|File \"|\.py\b|/root/|/home/|/tmp/|site-packages|pid=|ip=|\bactor|ray::|RayTaskError"
    r"|\x1b\[|\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b|0x[0-9a-f]{6,}")


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_a_clean_4xx(serve_cluster, case: Case):
    headers = [(k, v.format(token=serve_cluster.token)) for k, v in case.headers]
    if case.auth:
        headers.append(("Authorization", f"Bearer {serve_cluster.token}"))
    if case.body is not None:
        headers.append(("Content-Type", case.ctype))
    start = time.monotonic()
    with httpx.Client(base_url=serve_cluster.base_url, timeout=30) as client:
        r = client.request(case.method, case.path, content=case.body, files=case.files,
                           data=case.data, headers=headers)
        took = time.monotonic() - start
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        assert r.headers["content-type"] == "application/json", r.text[:300]
        error = r.json()["error"]
        assert error["message"] and error["type"]
        assert not INTERNAL.search(r.text), r.text[:500]
        if r.status_code == 405:
            assert r.headers["allow"]
        assert took < 10, f"{took:.1f} s"
        assert client.get("/health").status_code == 200


def test_health_stays_fast_while_a_large_body_is_processed(serve_cluster):
    """A 7 MB million-integer body used to block the gateway's loop for 5 s (issue 12)."""
    body = dumps({"input": list(range(10**6))})
    url = serve_cluster.base_url
    with httpx.Client(base_url=url, timeout=30) as client:
        idle = []
        for _ in range(10):
            t = time.monotonic()
            assert client.get("/health").status_code == 200
            idle.append(time.monotonic() - t)
        done = threading.Event()
        statuses = []

        def post_big():
            with httpx.Client(base_url=url, timeout=60, headers=serve_cluster.headers()) as big:
                for _ in range(3):
                    statuses.append(big.post("/v1/embeddings", content=body,
                                             headers={"Content-Type": "application/json"}).status_code)
            done.set()

        sender = threading.Thread(target=post_big)
        sender.start()
        busy = []
        while not done.is_set():
            t = time.monotonic()
            assert client.get("/health").status_code == 200
            busy.append(time.monotonic() - t)
        sender.join()
    assert statuses == [400] * 3
    print(f"/health idle max {max(idle) * 1000:.0f} ms, while a 7 MB body is processed "
          f"max {max(busy) * 1000:.0f} ms over {len(busy)} requests")
    # Before the fix: 4.9 s. The bound leaves room for a loaded test machine.
    assert max(busy) < max(idle) + 0.5
