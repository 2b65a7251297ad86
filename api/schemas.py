"""Every HTTP request and response shape, in one Ray-free module.

Shared by the gateway routes and ``clients/``. Shapes follow OpenAI's where an
OpenAI API exists, so the official client works unchanged.
"""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Annotated, Literal, TypeVar, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from deployments.results import EntitySpan, GraphEdge, GraphEntity, RelatedDocument, ReplicaInfo

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
"""Request bodies: no unknown fields, no NaN or Infinity (as numbers or as strings)."""


def is_blank(text: str) -> bool:
    """Nothing visible: only whitespace and invisible format characters (zero-width, RTL marks)."""
    return all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc") for c in text)


class ErrorDetail(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: ``{"error": {...}}``."""

    error: ErrorDetail


class EmbeddingRequest(BaseModel):
    model_config = STRICT

    input: Union[str, list[str]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)
    input_type: Literal["query", "document"] = "document"
    """Extension: ``query`` adds the model's retrieval instruction (Qwen3)."""

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        items = [value] if isinstance(value, str) else value
        if any(is_blank(s) for s in items):
            raise ValueError("input must not contain empty (or only invisible) strings")
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
    nodes: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Per model deployment, per host: ``available`` or why the model cannot run there
    (checked on that node: at build time, and by each replica when it starts)."""


class NodeStatus(BaseModel):
    """One Ray node as Ray sees it now."""

    host: str
    """The node's ``host`` label (titan, panda); identifies nodes that share an IP."""
    node_id: str
    alive: bool
    address: str
    labels: dict[str, str]
    gpus: float
    """Logical GPUs the node offers to Ray."""


class DeploymentStatus(BaseModel):
    name: str
    status: str
    """Serve's deployment status (HEALTHY, UPDATING, UNHEALTHY...) or NOT_STARTED."""
    message: str = ""
    replica_states: dict[str, int] = Field(default_factory=dict)
    replicas: list[ReplicaInfo] = Field(default_factory=list)
    """Per-replica detail for model deployments (the gateway reports counts only)."""
    num_gpus: float = 0.0
    """Declared GPU reservation per replica."""
    gpu_memory_gb: float = 0.0
    """Declared GPU memory per replica."""
    hosts: list[str] = Field(default_factory=list)
    """Allowed hosts, most preferred first (empty: any)."""
    nodes: dict[str, str] = Field(default_factory=dict)
    """Per host: ``available`` or why the model cannot run there (checked on that node)."""


class BudgetRow(BaseModel):
    """One deployment on one node: the planner's worst case next to what runs."""

    deployment: str
    planned_replicas: int
    planned_gpus: float
    planned_memory_gb: float
    running_replicas: int
    running_gpus: float
    running_memory_gb: float
    used_memory_gb: float | None = None
    """Sum of measured GPU memory; None where no replica measures it (CPU)."""
    available: bool = True
    """False: the model cannot run on this node (weights absent there...): nothing will."""
    reason: str | None = None


class NodeBudget(BaseModel):
    node: str
    host: str
    gpus: int
    gpu_memory_gb: float
    free_gpu_memory_gb: float
    """GPU memory left for Ray after the node's other users (topology/nodes.yaml)."""
    rows: list[BudgetRow]
    problems: list[str] = Field(default_factory=list)
    """The planner's objections for this node (empty: fits)."""


class ClusterStatus(BaseModel):
    """``GET /v1/status``: nodes, deployments and GPU budget at a glance."""

    application: str
    app_status: str
    nodes: list[NodeStatus]
    deployments: list[DeploymentStatus]
    budget: list[NodeBudget]


# --- retrieval, ingest and NER ----------------------------------------------------------

MAX_QUERY_CHARS = 4_000
MAX_DOCUMENT_CHARS = 200_000
MAX_DOCUMENTS = 256
MAX_METADATA_BYTES = 8 * 1024
"""A document's metadata, serialized as compact UTF-8 JSON; it comes back in every retrieve."""
MAX_METADATA_DEPTH = 8


def _storable_metadata(value: dict) -> dict:
    """Metadata any store can hold and any read can send back: bounded, JSON, no NUL."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_METADATA_DEPTH:
                raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, str) and "\x00" in item:
            raise ValueError("metadata must not contain NUL characters")
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False,
                              separators=(",", ":")).encode())
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"metadata must be plain JSON (no NaN, Infinity or lone surrogates): {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES}")
    return value


def _mend(text: str) -> str:
    """A string that encodes as UTF-8 (lone surrogates become U+FFFD)."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def readable_json(value: object, depth: int = 1) -> object:
    """A stored value made safe to send back, whatever was stored before the limits existed:
    non-finite numbers become null, broken strings are mended, nesting is cut at
    MAX_METADATA_DEPTH (null below it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _mend(value)
    if isinstance(value, (dict, list, tuple)):
        if depth > MAX_METADATA_DEPTH:
            return None
        if isinstance(value, dict):
            return {_mend(str(k)): readable_json(v, depth + 1) for k, v in value.items()}
        return [readable_json(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int)):
        return value
    return _mend(str(value))


def _not_blank(value: str) -> str:
    if is_blank(value):
        raise ValueError("must not be empty, whitespace or only invisible characters")
    return value


class NerRequest(BaseModel):
    model_config = STRICT

    texts: list[str] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)

    @field_validator("texts", "labels")
    @classmethod
    def _items_not_blank(cls, values: list[str]) -> list[str]:
        return [_not_blank(v) for v in values]


class NerResult(BaseModel):
    index: int
    entities: list[EntitySpan]


class NerResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[NerResult]


class RetrieveRequest(BaseModel):
    model_config = STRICT

    query: str = Field(max_length=MAX_QUERY_CHARS)
    k: int = Field(default=10, ge=1, le=100)
    hops: int = Field(default=1, ge=0, le=3)
    """Co-occurrence hops from the hits' entities (0: only the entities they mention)."""
    labels: list[str] | None = None
    """Keep only entities with these labels (from the server's NER label set)."""

    _query = field_validator("query")(classmethod(lambda cls, v: _not_blank(v)))


class RetrievedDocument(BaseModel):
    """A stored document as read back: mended so that no stored value can break a read."""

    id: str
    score: float
    """Cosine similarity to the query."""
    text: str
    metadata: dict

    @field_validator("id", "text", "metadata")
    @classmethod
    def _readable(cls, value: object) -> object:
        return readable_json(value)

    @field_validator("score")
    @classmethod
    def _finite(cls, value: float) -> float:
        return value if math.isfinite(value) else 0.0


class RetrieveResponse(BaseModel):
    object: Literal["retrieval"] = "retrieval"
    query: str
    results: list[RetrievedDocument]
    entities: list[GraphEntity]
    edges: list[GraphEdge]
    related: list[RelatedDocument]
    """Documents reached through the graph that were not vector hits."""
    timings_ms: dict[str, float]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (PostgreSQL text cannot hold them)")
    return value


DocumentId = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_no_nul)]
"""A document's id, as ingest takes it and forgetting names it."""


def _unique_ids(items: list) -> list:
    """Documents (by their ``id``) or ids: each at most once per request."""
    ids = [getattr(item, "id", item) for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("document ids must be unique within a request")
    return items


T = TypeVar("T")
Batch = Annotated[list[T], Field(min_length=1, max_length=MAX_DOCUMENTS), AfterValidator(_unique_ids)]
"""What one ingest or delete request may name: 1 to MAX_DOCUMENTS documents, each once."""


class IngestDocument(BaseModel):
    model_config = STRICT

    id: DocumentId
    text: str = Field(max_length=MAX_DOCUMENT_CHARS)
    metadata: dict = Field(default_factory=dict)
    """At most MAX_METADATA_BYTES as JSON and MAX_METADATA_DEPTH levels deep."""
    kind: Literal["document", "transcript"] = "document"

    _text = field_validator("text")(classmethod(lambda cls, v: _not_blank(v)))
    _metadata = field_validator("metadata")(classmethod(lambda cls, v: _storable_metadata(v)))


class IngestRequest(BaseModel):
    model_config = STRICT

    documents: Batch[IngestDocument]


class IngestResponse(BaseModel):
    object: Literal["ingest"] = "ingest"
    written: list[str]
    """Documents new or changed, now durable in every configured store."""
    unchanged: list[str]
    """Documents already stored with the same text and metadata: nothing was written."""
    entities: int
    entities_skipped: str | None = None
    """Why no entities were extracted (NER not running), when so."""
    refresh: Literal["redis", "direct", "none"]
    """How the index replicas learned of the write."""
    timings_ms: dict[str, float]


class DocumentPath(BaseModel):
    """``DELETE /v1/documents/{id}``: the id in the path, checked as ingest checks it."""

    id: DocumentId


class DeleteDocumentsRequest(BaseModel):
    """``POST /v1/documents/delete``: forget several documents at once."""

    model_config = STRICT

    ids: Batch[DocumentId]


class DocumentDeleted(BaseModel):
    object: Literal["document.deleted"] = "document.deleted"
    id: str
    deleted: bool
    """False when no store held the document: deleting is idempotent, safe to retry."""


class DocumentDeletedList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentDeleted]


# --- speech -------------------------------------------------------------------

AudioFormat = Literal["wav", "pcm", "mp3", "flac", "opus"]


class ChatterboxTTSRequest(BaseModel):
    """``POST /v1/tts`` exactly as the phone daemon sends it to chatterbox_server."""

    model_config = ConfigDict(allow_inf_nan=False)

    text: str
    reference_audio: str | None = Field(
        default=None, max_length=255, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9 _.-]*$")
    """A file name from the voice folder's metadata.json allowlist; never a path."""
    exaggeration: float = Field(default=0.3, ge=0.0, le=2.0)
    cfg_weight: float = Field(default=0.3, ge=0.0, le=1.0)
    temperature: float = Field(default=0.6, gt=0.0, le=2.0)
    sample_rate: int = Field(default=24_000, ge=8_000, le=48_000)
    """Extension: output rate (the phone plays 16 kHz); the contract's default is 24 kHz."""

    @field_validator("reference_audio")
    @classmethod
    def _bare_name(cls, value: str | None) -> str | None:
        if value is not None and ".." in value:
            raise ValueError("must be a bare file name from the voice allowlist, not a path")
        return value


class SpeechRequest(BaseModel):
    """OpenAI ``POST /v1/audio/speech``."""

    model_config = ConfigDict(allow_inf_nan=False)

    model: str
    input: str
    voice: str
    instructions: str | None = Field(default=None, max_length=4096)
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

    model_config = STRICT

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


# --- voice graph ----------------------------------------------------------------------


class VoiceTurnForm(BaseModel):
    """The non-file fields of ``POST /v1/voice/turn`` (multipart, the file is the utterance)."""

    model_config = STRICT

    turn_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """Name the turn to cancel it later; generated when absent (and sent back as X-Turn-Id)."""
    sample_rate: int | None = None
    """The file is raw 16-bit little-endian mono PCM at this rate."""
    engine: Literal["kokoro", "piper", "chatterbox"] = "kokoro"
    voice: str | None = None
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    output_sample_rate: int = Field(default=24_000, ge=8_000, le=48_000)
    retrieve: bool = False
    """Add /v1/retrieve's top results to the LLM's context."""
    k: int = Field(default=3, ge=1, le=20)
    system_prompt: str | None = Field(default=None, max_length=4000)
    max_tokens: int | None = Field(default=None, ge=1)
    """The reply's token budget (the server's default, ``SERVE_LLM__MAX_TOKENS``, when absent),
    at most ``SERVE_LLM__MAX_COMPLETION_TOKENS`` as for chat (400 above it)."""
    language: str | None = None
    conversation_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """Keep this conversation's recent turns as the LLM's context (docs/voice.md); the
    push-to-talk page keeps one per page session."""


class VoiceCancelRequest(BaseModel):
    model_config = STRICT

    turn_id: str = Field(min_length=1, max_length=64)


class VoiceCancelResponse(BaseModel):
    turn_id: str
    cancelled: bool
    samples_sent: int
    """Audio samples already sent when the turn stopped: what the caller has heard at most."""
    sample_rate: int


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = Field(default=None, max_length=64)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    """Send a last chunk with ``usage`` (and no choices) before ``[DONE]``."""


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``; the body limit and ``max_tokens`` ceiling are settings."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    """Accepted for the client's sake; the cluster's one chat model answers."""
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    """0 is greedy."""
    stop: Union[str, list[str], None] = Field(default=None, validate_default=True)
    """Always a list once validated."""
    user: str | None = Field(default=None, max_length=256)
    retrieve: bool = False
    """An extension (OpenAI's API has none): add ``/v1/retrieve``'s top ``k`` texts for the
    last user message to the system prompt, as a voice turn with ``retrieve`` does."""
    k: int = Field(default=3, ge=1, le=20)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not s or len(s) > 64 for s in stops):
            raise ValueError("stop takes at most 4 strings of 1 to 64 characters")
        return stops


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: ChatUsage | None = None
