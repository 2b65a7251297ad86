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
