"""``ray start`` for one node as ``topology/nodes.yaml`` defines it (``cluster/start_node.sh``)."""

from __future__ import annotations

from topology.nodes import Node, load_nodes

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
