"""Every HTTP request and response shape, in one Ray-free module.

Shared by the gateway routes and ``clients/``. Shapes follow OpenAI's where an
OpenAI API exists, so the official client works unchanged.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ErrorDetail(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: ``{"error": {...}}``."""

    error: ErrorDetail


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Union[str, list[str]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    input_type: Literal["query", "document"] = "document"
    """Extension: ``query`` adds the model's retrieval instruction (Qwen3)."""

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        items = [value] if isinstance(value, str) else value
        if any(not s.strip() for s in items):
            raise ValueError("input must not contain empty strings")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "her-serve"
    deployment: str
    task: str
    status: Literal["ready", "unavailable"]
    reason: str | None = None
    backend: str | None = None
    device: str | None = None
    nodes: list[str] = Field(default_factory=list)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    auth: Literal["token", "loopback-only"]
    deployments: dict[str, str]
    """Deployment name to ``ready`` or the reason it is not running."""


# --- speech -------------------------------------------------------------------

AudioFormat = Literal["wav", "pcm", "mp3", "flac", "opus"]


class ChatterboxTTSRequest(BaseModel):
    """``POST /v1/tts`` exactly as the phone daemon sends it to chatterbox_server."""

    text: str
    reference_audio: str | None = None
    """A file name from the voice folder's metadata.json allowlist; never a path."""
    exaggeration: float = Field(default=0.3, ge=0.0, le=2.0)
    cfg_weight: float = Field(default=0.3, ge=0.0, le=1.0)
    temperature: float = Field(default=0.6, gt=0.0, le=2.0)
    sample_rate: int = Field(default=24_000, ge=8_000, le=48_000)
    """Extension: output rate (the phone plays 16 kHz); the contract's default is 24 kHz."""

    @field_validator("reference_audio")
    @classmethod
    def _bare_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if (not value or "/" in value or "\\" in value or ".." in value
                or value.startswith(".") or ":" in value or "\x00" in value):
            raise ValueError("must be a bare file name from the voice allowlist, not a path")
        return value


class SpeechRequest(BaseModel):
    """OpenAI ``POST /v1/audio/speech``."""

    model: str
    input: str
    voice: str
    instructions: str | None = None
    """Accepted for compatibility; none of the voices here take instructions."""
    response_format: AudioFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio"] = "audio"
    sample_rate: int | None = Field(default=None, ge=8_000, le=48_000)
    """Extension: output rate; default is the model's own (24 kHz Kokoro, 22.05 kHz Piper)."""


class VoiceCard(BaseModel):
    id: str
    model: str
    """The model name to send with it (``kokoro``, ``piper``, ``chatterbox``)."""
    deployment: str
    default: bool = False


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceCard]
    aliases: list[str]
    """OpenAI voice names (alloy, nova...) accepted for every model: its default voice."""


class CancelResponse(BaseModel):
    cancelled: list[str]
    """TTS deployments whose running syntheses were stopped."""


class TranscriptionForm(BaseModel):
    """The non-file fields of OpenAI ``POST /v1/audio/transcriptions`` (multipart)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = Field(default=None, max_length=2000)
    response_format: Literal["json", "text", "verbose_json", "srt", "vtt"] = "json"
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["segment", "word"]] = Field(default_factory=lambda: ["segment"])
    sample_rate: int | None = None
    """Extension: the file is raw 16-bit little-endian mono PCM at this rate."""


class TranscriptionWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionSegment(BaseModel):
    id: int
    start: float
    end: float
    text: str


class Transcription(BaseModel):
    text: str


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment] | None = None
    words: list[TranscriptionWord] | None = None
