"""Node definitions (``topology/nodes.yaml``) as typed data."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field

NODES_FILE = Path(__file__).with_name("nodes.yaml")


class Node(BaseModel):
    name: str
    role: str
    description: str = ""
    gpus: int
    gpu_memory_gb: float
    cpus: int
    labels: dict[str, str]
    resources: dict[str, float] = Field(default_factory=dict)
    reserved: dict[str, float] = Field(default_factory=dict)
    """GPU memory (GB) already used outside the Ray cluster, by what."""

    @property
    def free_gpu_memory_gb(self) -> float:
        return self.gpu_memory_gb - sum(self.reserved.values())


def load_nodes(path: Path = NODES_FILE) -> dict[str, Node]:
    raw = yaml.safe_load(Path(path).read_text())["nodes"]
    return {name: Node(name=name, **spec) for name, spec in raw.items()}
