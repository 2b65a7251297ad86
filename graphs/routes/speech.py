"""Text to speech: the phone daemon's Chatterbox API and OpenAI's.

- ``POST /v1/tts`` (Chatterbox contract): whole raw int16 mono PCM with
  X-Audio-Duration/X-Sample-Rate/X-Channels/X-Format. Served by ChatterboxTTS,
  or by the default engine (Kokoro) when no cloning model is up;
  ``X-TTS-Engine`` says which spoke.
- ``POST /cancel``: stops every running synthesis (barge-in).
- ``POST /v1/audio/speech`` (OpenAI): chunked audio, one sentence at a time for
  wav/pcm. ``GET /v1/audio/voices`` lists the voices per model.

Text is validated here, before any model is called, so bad text is a 4xx.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response, StreamingResponse

from deployments.chatterbox import CHATTERBOX
from deployments.registry import of_task
from deployments.results import ReplicaInfo
from deployments.settings import SpeechSettings
from deployments.text import SynthesisCancelled, clean_text
from graphs.failover import TTSStream, hedge_policy
from graphs.http import APIError, EdgeRoute, body_limit
from graphs.schemas import (
    CancelResponse, ChatterboxTTSRequest, SpeechRequest, VoiceCard, VoiceList,
)
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
MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "mp3": "audio/mpeg",
               "flac": "audio/flac", "opus": "audio/ogg"}

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


async def open_stream(services: Services, name: str, settings: SpeechSettings,
                      text: str, fmt: str, **kwargs) -> tuple[bytes, TTSStream]:
    """Start a failover-safe TTS stream and wait for its first piece, so bad input is still a 4xx.

    The gateway maps what the engine refuses (ValueError: 400, a cancel: 409).
    """
    stream = TTSStream(services.get(name), text, fmt, settings.piece_timeout_s,
                       settings.suspect_s, hedge=hedge_policy(name, settings),
                       queue_wait_s=settings.queue_wait_s, **kwargs)
    return await stream.first(), stream


async def rest_of(first: bytes, stream: TTSStream):
    """Forward a started stream; a cancel mid-way ends it early (the audio so far stands)."""
    yield first
    try:
        async for piece in stream.rest():
            yield piece
    except SynthesisCancelled:
        return


def served_headers(engine: str, stream: TTSStream) -> dict[str, str]:
    """Which engine and node spoke (and whether a node failed mid-way)."""
    return {"X-TTS-Engine": engine, "X-Served-By": stream.host or "unknown",
            "X-TTS-Resumed": str(stream.resumed)}


def speech_settings(settings: SettingsDep) -> SpeechSettings:
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
    first, stream = await open_stream(
        services, engine, settings, text, "pcm", sample_rate=body.sample_rate, **kwargs)
    pcm = b"".join([piece async for piece in rest_of(first, stream)])
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
    names = [n for n in services.handles if services.tasks.get(n) == "tts"]
    for name in names:
        await services.handles[name].broadcast("cancel").results_async(timeout_s=5)
    return CancelResponse(cancelled=names)


@audio_route("/v1/audio/speech", StreamingResponse, list(MEDIA_TYPES.values()),
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
    first, stream = await open_stream(
        services, engine, settings, text, body.response_format, voice=voice,
        speed=body.speed, sample_rate=rate)
    return StreamingResponse(
        rest_of(first, stream), media_type=MEDIA_TYPES[body.response_format],
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
