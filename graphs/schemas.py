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


class ReplicaStatus(BaseModel):
    """One live replica, from its own ``info()``."""

    host: str | None = None
    node_id: str | None = None
    pid: int | None = None
    model: str | None = None
    backend: str | None = None
    device: str | None = None
    gpu_memory_gb: float | None = None
    """Declared cap (serve_config.yaml)."""
    gpu_memory_capped: bool = False
    """True where the cap is enforced (a CUDA device); False on CPU."""
    gpu_memory_used_gb: float | None = None
    """Measured by torch in the replica; None without CUDA."""
    error: str | None = None


class DeploymentStatus(BaseModel):
    name: str
    status: str
    """Serve's deployment status (HEALTHY, UPDATING, UNHEALTHY...) or NOT_STARTED."""
    message: str = ""
    replica_states: dict[str, int] = Field(default_factory=dict)
    replicas: list[ReplicaStatus] = Field(default_factory=list)
    """Per-replica detail for model deployments (the gateway reports counts only)."""
    num_gpus: float = 0.0
    """Declared GPU reservation per replica."""
    gpu_memory_gb: float = 0.0
    """Declared GPU memory per replica."""
    hosts: list[str] = Field(default_factory=list)
    """Allowed hosts, most preferred first (empty: any)."""


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


class NodeBudget(BaseModel):
    node: str
    host: str
    gpus: int
    gpu_memory_gb: float
    free_gpu_memory_gb: float
    """GPU memory left for Ray after the node's other users (cluster/nodes.yaml)."""
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
