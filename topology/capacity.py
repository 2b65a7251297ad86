"""The capacity plan: does a topology fit on the nodes?

For each node it adds up every deployment that can ever land there, failover
targets included (a deployment listing both hosts is counted on both), and
checks two budgets: Ray's fractional GPU reservations (sum <= the node's GPUs)
and the declared GPU memory (sum <= what is left after the node's other users).
Ray-free: the gateway's ``/v1/status``, ``python -m cluster.capacity`` and the
CLI's ``capacity`` all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from topology.nodes import NODES_FILE, Node, load_nodes
from topology.serve_config import AppArgs, load_app_args

EPS = 1e-9


@dataclass
class NodeLoad:
    node: Node
    rows: list[tuple[str, int, float, float]] = field(default_factory=list)
    """(deployment, replicas, GPU fraction total, GPU memory total)."""

    @property
    def gpus(self) -> float:
        return sum(r[2] for r in self.rows)

    @property
    def memory_gb(self) -> float:
        return sum(r[3] for r in self.rows)

    def problems(self) -> list[str]:
        out = []
        if self.gpus > self.node.gpus + EPS:
            out.append(
                f"{self.node.name}: GPU reservations sum to {self.gpus:.2f} "
                f"but the node has {self.node.gpus} GPU(s)"
            )
        if self.memory_gb > self.node.free_gpu_memory_gb + EPS:
            out.append(
                f"{self.node.name}: declared GPU memory {self.memory_gb:.2f} GB exceeds the "
                f"{self.node.free_gpu_memory_gb:.2f} GB free "
                f"({self.node.gpu_memory_gb:g} GB less {sum(self.node.reserved.values()):g} GB "
                f"used by {', '.join(self.node.reserved) or 'nothing'})"
            )
        return out


def plan(args: AppArgs, nodes: dict[str, Node], planned: bool = False) -> list[NodeLoad]:
    """Worst-case load per node: every replica that could be placed there."""
    hosts = [n.labels.get("host", name) for name, n in nodes.items()]
    unknown = {h for spec in args.deployments.values() for h in spec.hosts} - set(hosts)
    if unknown:
        raise ValueError(f"serve_config names hosts with no node definition: {sorted(unknown)}")
    loads = []
    for name, node in nodes.items():
        load = NodeLoad(node)
        for dep, spec in args.deployments.items():
            n = spec.replicas_on(node.labels.get("host", name), hosts, planned)
            if n:
                load.rows.append((dep, n, n * spec.num_gpus, n * spec.gpu_memory_gb))
        loads.append(load)
    return loads


def check_files(
    config: Path, nodes_file: Path = NODES_FILE, planned: bool = False
) -> tuple[list[NodeLoad], list[str]]:
    args = load_app_args(yaml.safe_load(Path(config).read_text()))
    loads = plan(args, load_nodes(nodes_file), planned)
    return loads, [p for load in loads for p in load.problems()]
