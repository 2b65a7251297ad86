"""Text to speech: the phone daemon's Chatterbox API and OpenAI's.

- ``POST /v1/tts`` (Chatterbox contract): whole raw int16 mono PCM with
  X-Audio-Duration/X-Sample-Rate/X-Channels/X-Format. Served by ChatterboxTTS,
  or by the default engine (Kokoro) when no cloning model is up;
  ``X-TTS-Engine`` says which spoke.
- ``POST /cancel`` (barge-in): stops the syntheses that ``/v1/tts`` started, the
  phone's own route, and nothing else: a voice turn (``/v1/voice/cancel``) or an
  ``/v1/audio/speech`` stream of another caller keeps speaking.
- ``POST /v1/audio/speech`` (OpenAI): chunked audio, one sentence at a time for
  wav/pcm; compressed formats are encoded here at the end.
  ``GET /v1/audio/voices`` lists the voices per model.

Text is validated and split into sentences here, before any model is called,
so bad text is a 4xx. Each request is admitted or shed at once
(graphs.failover.TTSCalls.admit).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, Depends
from starlette.responses import Response, StreamingResponse

from api.schemas import (
    CancelResponse, ChatterboxTTSRequest, SpeechRequest, VoiceCard, VoiceList,
)
from deployments import audio
from deployments.chatterbox import CHATTERBOX
from deployments.registry import of_task
from deployments.results import ReplicaInfo, SpeechPiece
from deployments.settings import SpeechSettings
from deployments.text import CancelKey, SynthesisCancelled, clean_text, tts_sentences
from graphs.failover import SpeechStream
from graphs.http import APIError, EdgeRoute, body_limit
from graphs.services import Services, ServicesDep, SettingsDep

MAX_BODY_BYTES = 64 * 1024
CLONER = CHATTERBOX.name
# Model names a client may send, to the deployment that serves them (from the declarations).
MODELS = {name: m.name for m in of_task("tts") for name in m.names}
MODEL_OF = {m.name: m.public_name for m in of_task("tts")}
# OpenAI's voice names: accepted everywhere as the model's default voice, so
# code written for OpenAI works unchanged.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx",
                 "sage", "shimmer", "verse")
PHONE = "phone"
"""Cancel scope of /v1/tts: what the phone's POST /cancel stops."""

router = APIRouter(route_class=EdgeRoute, tags=["speech"])


def checked_text(text: str, limit: int, param: str) -> str:
    try:
        return clean_text(text, limit)
    except ValueError as exc:
        raise APIError(400, str(exc), param=param) from None


async def tts_info(services: Services, name: str) -> ReplicaInfo:
    """info() of a live replica of TTS deployment ``name`` (voices, rate), or 503."""
    services.get(name)
    for replica in (await services.replica_info()).get(name, []):
        if replica.voices is not None:
            return replica
    raise APIError(503, f"{name} has no ready replica yet", type="unavailable")


async def open_stream(services: Services, name: str, text: str, scope: str,
                      **synth) -> tuple[SpeechPiece, SpeechStream, AsyncIterator[SpeechPiece]]:
    """Admit the request (or 503 at once), ask for its sentences and wait for the first,
    so bad input is still a 4xx.

    The gateway maps what the engine refuses (ValueError: 400, a cancel: 409).
    """
    handle = services.get(name)
    services.tts.admit(name)
    stream = services.tts.stream(handle, tts_sentences(text), CancelKey.new(scope), **synth)
    pieces = stream.pieces()
    return await anext(pieces), stream, pieces


async def until_cancelled(pieces: AsyncIterator[SpeechPiece]) -> AsyncIterator[SpeechPiece]:
    """The rest of a started stream; a cancel mid-way ends it early (the audio so far stands)."""
    try:
        async for piece in pieces:
            yield piece
    except SynthesisCancelled:
        return
    finally:
        await pieces.aclose()  # a client gone mid-way: the sentences still asked are cancelled


async def encoded(first: SpeechPiece, pieces: AsyncIterator[SpeechPiece],
                  fmt: str) -> AsyncIterator[bytes]:
    """The response body in ``fmt``: pcm/wav sentence by sentence, compressed formats at the end."""
    encoder = audio.StreamEncoder(fmt, first.sample_rate)
    if head := encoder.start() + encoder.add(first.samples):
        yield head
    async for piece in until_cancelled(pieces):
        if chunk := encoder.add(piece.samples):
            yield chunk
    if tail := await asyncio.to_thread(encoder.finish):
        yield tail


def served_headers(engine: str, stream: SpeechStream) -> dict[str, str]:
    """Which engine and node spoke (and whether a node failed mid-way)."""
    return {"X-TTS-Engine": engine, "X-Served-By": stream.host or "unknown",
            "X-TTS-Resumed": str(stream.resumed)}


async def speech_settings(settings: SettingsDep) -> SpeechSettings:
    return settings.speech


SpeechDep = Annotated[SpeechSettings, Depends(speech_settings)]


def audio_route(path: str, response_class: type[Response], media_types: list[str], what: str):
    """A POST route answering audio, described as such in /openapi.json."""
    return router.post(path, response_class=response_class, openapi_extra=body_limit(MAX_BODY_BYTES),
                       responses={200: {"content": {t: {} for t in media_types}, "description": what}})


@audio_route("/v1/tts", Response, ["application/octet-stream"],
             "Raw int16 mono PCM; X-Audio-Duration, X-Sample-Rate...")
async def chatterbox_tts(
    body: ChatterboxTTSRequest, services: ServicesDep, settings: SpeechDep
) -> Response:
    text = checked_text(body.text, settings.max_input_chars, "text")
    if CLONER in services.handles:
        engine = CLONER
        kwargs = {
            "voice": body.reference_audio or settings.chatterbox.default_reference,
            "style": {"exaggeration": body.exaggeration, "cfg_weight": body.cfg_weight,
                      "temperature": body.temperature},
        }
    else:
        engine, kwargs = settings.default_engine, {}
    first, stream, pieces = await open_stream(
        services, engine, text, PHONE, sample_rate=body.sample_rate, **kwargs)
    pcm = first.pcm + b"".join([piece.pcm async for piece in until_cancelled(pieces)])
    headers = {
        "X-Audio-Duration": f"{len(pcm) / 2 / body.sample_rate:.3f}",
        "X-Sample-Rate": str(body.sample_rate),
        "X-Channels": "1",
        "X-Format": "pcm_s16le",
        **served_headers(engine, stream),
    }
    if engine != CLONER:
        headers["X-TTS-Fallback-Reason"] = services.unavailable.get(CLONER, "not deployed")[:200]
    return Response(pcm, media_type="application/octet-stream", headers=headers)


@router.post("/cancel", response_model=CancelResponse)
async def cancel(services: ServicesDep) -> CancelResponse:
    """The phone's barge-in: every /v1/tts synthesis, on every TTS replica, and no other."""
    names = [n for n in services.handles if services.tasks.get(n) == "tts"]
    await asyncio.gather(*(services.handles[n].broadcast("cancel", CancelKey(PHONE))
                           .results_async(timeout_s=5) for n in names))
    return CancelResponse(cancelled=names)


@audio_route("/v1/audio/speech", StreamingResponse, list(audio.MEDIA_TYPES.values()),
             "Audio, chunked one sentence at a time for wav/pcm.")
async def speech(
    body: SpeechRequest, services: ServicesDep, settings: SpeechDep
) -> StreamingResponse:
    text = checked_text(body.input, settings.max_input_chars, "input")
    if body.model not in MODELS:
        raise APIError(404, f"model {body.model!r} is not a speech model; one of {sorted(MODELS)}",
                       param="model", code="model_not_found")
    engine = MODELS[body.model]
    if engine == CLONER and CLONER not in services.handles:
        engine = settings.default_engine
    info = await tts_info(services, engine)
    voice = body.voice
    if voice not in info.voices:
        if voice not in OPENAI_VOICES:
            raise APIError(400, f"unknown voice {voice!r} for {body.model}; available: "
                           f"{info.voices} or an OpenAI voice name", param="voice")
        voice = info.default_voice
    rate = body.sample_rate or info.sample_rate
    first, stream, pieces = await open_stream(
        services, engine, text, "speech", voice=voice, speed=body.speed, sample_rate=rate)
    return StreamingResponse(
        encoded(first, pieces, body.response_format),
        media_type=audio.MEDIA_TYPES[body.response_format],
        headers={**served_headers(engine, stream), "X-Sample-Rate": str(rate)},
    )


@router.get("/v1/audio/voices", response_model=VoiceList)
async def voices(services: ServicesDep) -> VoiceList:
    cards = []
    for name in MODEL_OF:
        if name not in services.handles:
            continue
        info = await tts_info(services, name)
        cards += [VoiceCard(id=v, model=MODEL_OF[name], deployment=name,
                            default=v == info.default_voice) for v in info.voices]
    return VoiceList(data=cards, aliases=list(OPENAI_VOICES))
