"""Capacity planner: does ``serve_config.yaml`` fit on Titan and Panda?

For each node it adds up every deployment that can ever land there, failover
targets included (a deployment listing both hosts is counted on both), and
checks two budgets: Ray's fractional GPU reservations (sum <= the node's GPUs)
and the declared GPU memory (sum <= what is left after the node's other users).

    python -m cluster.capacity [serve_config.yaml] [--nodes cluster/nodes.yaml] [--planned]

Exits 1 with the reason when something does not fit.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cluster.nodes import NODES_FILE, Node, load_nodes
from graphs.topology import AppArgs, load_app_args

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


def render(loads: list[NodeLoad]) -> str:
    lines = []
    for load in loads:
        n = load.node
        lines.append(
            f"{n.name} ({n.role}): {n.gpus} GPU, {n.gpu_memory_gb:g} GB GPU memory, "
            f"{n.free_gpu_memory_gb:g} GB free for Ray"
        )
        lines.append(f"  {'deployment':<16}{'replicas':>9}{'GPU':>8}{'GPU mem GB':>12}")
        for dep, reps, gpus, mem in load.rows:
            lines.append(f"  {dep:<16}{reps:>9}{gpus:>8.2f}{mem:>12.2f}")
        for what, gb in n.reserved.items():
            lines.append(f"  {'(' + what + ')':<33}{gb:>12.2f}")
        verdict = "fits" if not load.problems() else "DOES NOT FIT"
        lines.append(
            f"  {'total in Ray':<25}{load.gpus:>8.2f}{load.memory_gb:>12.2f}  "
            f"of {n.gpus} GPU / {n.free_gpu_memory_gb:g} GB: {verdict}"
        )
        lines.append("")
    return "\n".join(lines)


def check_files(
    config: Path, nodes_file: Path = NODES_FILE, planned: bool = False
) -> tuple[list[NodeLoad], list[str]]:
    args = load_app_args(yaml.safe_load(Path(config).read_text()))
    loads = plan(args, load_nodes(nodes_file), planned)
    return loads, [p for load in loads for p in load.problems()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check serve_config.yaml against the nodes.")
    parser.add_argument("config", nargs="?", default="serve_config.yaml")
    parser.add_argument("--nodes", default=str(NODES_FILE))
    parser.add_argument(
        "--planned", action="store_true", help="count disabled (planned) deployments too"
    )
    a = parser.parse_args(argv)
    try:
        loads, problems = check_files(Path(a.config), Path(a.nodes), a.planned)
    except (OSError, ValueError, KeyError) as exc:
        print(f"capacity: cannot plan: {exc}", file=sys.stderr)
        return 2
    print(render(loads))
    if problems:
        print("capacity: the configuration does not fit:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("capacity: every node fits (failover targets included).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
