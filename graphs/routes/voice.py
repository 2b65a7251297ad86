"""The voice loop as one call: POST /v1/voice/turn streams NDJSON frames; POST /v1/voice/cancel.

Frames, one JSON object per line, in this order:
  {"type": "transcript", "turn_id", "text", "language"}
  {"type": "context", "results": [...]}                       (with retrieve=true)
  {"type": "audio", "index", "text", "sample_rate", "samples", "audio": base64 int16 LE PCM}  x N
  {"type": "error", "stage": "llm"|"tts", "message", ...}      (only if something failed mid-turn)
  {"type": "done", "turn_id", "reply", "cancelled", "samples_sent", "sample_rate", "timings_ms"}
"""

from __future__ import annotations

import json
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from deployments.settings import WhisperSettings
from graphs.voice import VOICE as VOICE_GRAPH
from graphs.http import APIError, parse_json, read_audio_form
from graphs.schemas import VoiceCancelRequest, VoiceCancelResponse, VoiceTurnForm
from graphs.services import Services

VOICE = VOICE_GRAPH.name


def routes(services: Services, limits: WhisperSettings) -> list[Route]:
    async def turn(request: Request) -> StreamingResponse:
        audio, form = await read_audio_form(request, limits.max_audio_bytes, VoiceTurnForm)
        turn_id = form.turn_id or uuid.uuid4().hex
        frames = services.get(VOICE).options(stream=True).turn.remote(
            turn_id, audio, form.sample_rate, form.model_dump(exclude={"turn_id", "sample_rate"}))
        try:
            first = await frames.__anext__()
        except LookupError as exc:  # TurnRefused: no LLM, or the TTS engine is not running
            raise APIError(503, str(exc), type="unavailable") from None
        except ValueError as exc:  # audio STT cannot decode or accept
            raise APIError(400, str(exc), param="file") from None

        async def ndjson():
            yield json.dumps(first) + "\n"
            async for frame in frames:
                yield json.dumps(frame) + "\n"

        return StreamingResponse(ndjson(), media_type="application/x-ndjson",
                                 headers={"X-Turn-Id": turn_id})

    async def cancel(request: Request) -> JSONResponse:
        body = await parse_json(request, VoiceCancelRequest, 4096)
        results = await services.get(VOICE).broadcast("cancel", body.turn_id).results_async(timeout_s=5)
        found = next((r for r in results if r), None)
        if found is None:
            raise APIError(404, f"no running turn {body.turn_id!r}", param="turn_id",
                           code="turn_not_found")
        return JSONResponse(VoiceCancelResponse(**found).model_dump())

    return [
        Route("/v1/voice/turn", turn, methods=["POST"]),
        Route("/v1/voice/cancel", cancel, methods=["POST"]),
    ]
