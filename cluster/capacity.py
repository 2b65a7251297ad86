"""Capacity planner's command line: does ``serve_config.yaml`` fit on Titan and Panda?

    python -m cluster.capacity [serve_config.yaml] [--nodes topology/nodes.yaml] [--planned]

Prints each node's plan (``topology.capacity``) and exits 1 with the reason
when something does not fit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from topology.capacity import NodeLoad, check_files
from topology.nodes import NODES_FILE


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
