"""POST /v1/audio/transcriptions, OpenAI-compatible (multipart; the official client works unchanged).

The file is read here with a size bound and decoded in the WhisperSTT replica
(WAV, FLAC, OGG, or raw int16 PCM with a ``sample_rate`` field); anything it
cannot accept comes back as a 400.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from deployments.results import Segment
from deployments.stt import WHISPER
from graphs.http import EdgeRoute, multipart_body, read_audio_form
from graphs.schemas import (
    Transcription, TranscriptionForm, TranscriptionSegment, TranscriptionVerbose,
    TranscriptionWord,
)
from graphs.services import ServicesDep, SettingsDep

router = APIRouter(route_class=EdgeRoute, tags=["audio"])


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitles(segments: list[Segment], fmt: str) -> str:
    """SRT or WebVTT cues, one per segment."""
    sep = "," if fmt == "srt" else "."
    cues = []
    for i, s in enumerate(segments, 1):
        timing = f"{_timestamp(s.start, sep)} --> {_timestamp(s.end, sep)}"
        cues.append(f"{i}\n{timing}\n{s.text}\n" if fmt == "srt" else f"{timing}\n{s.text}\n")
    body = "\n".join(cues)
    return body if fmt == "srt" else f"WEBVTT\n\n{body}"


@router.post(
    "/v1/audio/transcriptions", response_class=Response,
    openapi_extra=multipart_body(TranscriptionForm),
    responses={200: {"content": {
        "application/json": {"schema": {"anyOf": [
            {"$ref": "#/components/schemas/Transcription"},
            {"$ref": "#/components/schemas/TranscriptionVerbose"}]}},
        "text/plain": {}, "application/x-subrip": {}, "text/vtt": {}},
        "description": "The transcript in the requested response_format."}},
)
async def transcribe(request: Request, services: ServicesDep, settings: SettingsDep) -> Response:
    data, form = await read_audio_form(
        request, settings.speech.whisper.max_audio_bytes, TranscriptionForm,
        ("timestamp_granularities",))
    words = "word" in form.timestamp_granularities
    # Undecodable audio, a bad rate or language, over-limit length: ValueError, a 400.
    result = await services.get(WHISPER.name).transcribe.remote(
        data, form.sample_rate, form.language, form.prompt, form.temperature, words)
    if form.response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if form.response_format in ("srt", "vtt"):
        media = "application/x-subrip" if form.response_format == "srt" else "text/vtt"
        return Response(subtitles(result.segments, form.response_format), media_type=media)
    if form.response_format == "json":
        return JSONResponse(Transcription(text=result.text).model_dump())
    verbose = TranscriptionVerbose(
        language=result.language, duration=result.duration, text=result.text,
        segments=[TranscriptionSegment.model_validate(s, from_attributes=True)
                  for s in result.segments] if "segment" in form.timestamp_granularities else None,
        words=[TranscriptionWord.model_validate(w, from_attributes=True)
               for s in result.segments for w in s.words] if words else None,
    )
    return JSONResponse(verbose.model_dump(exclude_none=True))
