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

from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from api.schemas import VoiceCancelRequest, VoiceCancelResponse, VoiceTurnForm
from graphs.http import APIError, EdgeRoute, body_limit, multipart_body, read_audio_form
from graphs.routes.chat import reply_budget
from graphs.services import ServicesDep, SettingsDep
from graphs.voice import VOICE as VOICE_GRAPH

VOICE = VOICE_GRAPH.name

router = APIRouter(route_class=EdgeRoute, tags=["voice"])


@router.post(
    "/v1/voice/turn", response_class=StreamingResponse, openapi_extra=multipart_body(VoiceTurnForm),
    responses={200: {"content": {"application/x-ndjson": {}},
                     "description": "NDJSON frames: transcript, context, audio..., done."}},
)
async def turn(request: Request, services: ServicesDep, settings: SettingsDep) -> StreamingResponse:
    audio, form = await read_audio_form(
        request, settings.speech.whisper.max_audio_bytes, VoiceTurnForm)
    turn_id = form.turn_id or uuid.uuid4().hex
    options = form.model_dump(exclude={"turn_id", "sample_rate"})
    options["max_tokens"] = reply_budget(form.max_tokens, settings.llm.max_tokens, settings.llm)
    frames = services.get(VOICE).options(stream=True).turn.remote(
        turn_id, audio, form.sample_rate, options)
    # Refusals come before the first frame, while an error can still be an HTTP status:
    # TurnRefused (no LLM, TTS engine down) is a 503, audio STT cannot accept a 400.
    first = await frames.__anext__()

    async def ndjson():
        yield json.dumps(first) + "\n"
        async for frame in frames:
            yield json.dumps(frame) + "\n"

    return StreamingResponse(ndjson(), media_type="application/x-ndjson",
                             headers={"X-Turn-Id": turn_id})


@router.post("/v1/voice/cancel", response_model=VoiceCancelResponse,
             openapi_extra=body_limit(4096))
async def cancel(body: VoiceCancelRequest, services: ServicesDep) -> VoiceCancelResponse:
    results = await services.get(VOICE).broadcast("cancel", body.turn_id).results_async(timeout_s=5)
    found = next((r for r in results if r), None)
    if found is None:
        raise APIError(404, f"no running turn {body.turn_id!r}", param="turn_id",
                       code="turn_not_found")
    return VoiceCancelResponse(**found)
