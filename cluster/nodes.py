"""Node definitions (``cluster/nodes.yaml``) as typed data."""

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


GCS_PORT = 6390  # not Ray's default 6379: Redis owns that port on these machines


def ray_start_args(node: Node, head_address: str | None = None, num_cpus: int | None = None) -> list[str]:
    """``ray start`` flags for a node: its GPUs, labels and resources from nodes.yaml."""
    import json

    args = [
        "ray", "start",
        f"--num-cpus={num_cpus if num_cpus is not None else node.cpus}",
        f"--num-gpus={node.gpus}",
        f"--labels={','.join(f'{k}={v}' for k, v in node.labels.items())}",
        f"--resources={json.dumps(node.resources)}",
        "--disable-usage-stats",
    ]
    if node.role == "head":
        args += ["--head", f"--port={GCS_PORT}"]
    else:
        if not head_address:
            raise ValueError(f"{node.name} is a worker: give the head's address (HEAD=<ip>:{GCS_PORT})")
        args.append(f"--address={head_address}")
    return args


if __name__ == "__main__":  # cluster/start_node.sh: print one node's `ray start` command
    import shlex
    import sys

    name, head = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    print(shlex.join(ray_start_args(load_nodes()[name], head or None)))
