"""Rich tables for ``GET /v1/status``: pure functions, no I/O (the CLI prints them).

    from rich.console import Console
    status = httpx.get(f"{base}/v1/status", headers=auth).json()
    Console().print(status_view.render_status(status))      # `her-serve status`
    Console().print(status_view.render_capacity(status))    # `her-serve capacity`
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from graphs.schemas import ClusterStatus, NodeBudget

HEALTHY = {"HEALTHY", "RUNNING"}


def _parse(status: dict | ClusterStatus) -> ClusterStatus:
    return status if isinstance(status, ClusterStatus) else ClusterStatus.model_validate(status)


def _state(text: str) -> str:
    """Colour a Serve status: green when healthy, red when not."""
    colour = "green" if text in HEALTHY else "yellow" if text == "UPDATING" else "red"
    return f"[{colour}]{text}[/{colour}]"


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def nodes_table(status: ClusterStatus) -> Table:
    table = Table(title="Nodes")
    for col in ("host", "alive", "GPUs", "address", "labels", "node id"):
        table.add_column(col)
    for n in status.nodes:
        table.add_row(
            n.host,
            "[green]yes[/green]" if n.alive else "[red]no[/red]",
            f"{n.gpus:g}",
            n.address,
            ", ".join(f"{k}={v}" for k, v in sorted(n.labels.items())),
            n.node_id[:12],
        )
    return table


def deployments_table(status: ClusterStatus) -> Table:
    """One row per replica (one per deployment when none runs)."""
    table = Table(title=f"Deployments of {status.application} ({status.app_status})")
    for col in ("deployment", "status", "host", "backend", "device", "GPU", "mem cap GB",
                "mem used GB", "note"):
        table.add_column(col)
    for d in status.deployments:
        if not d.replicas:
            table.add_row(d.name, _state(d.status), "-", "-", "-", f"{d.num_gpus:g}",
                          _gb(d.gpu_memory_gb), "-", d.message)
            continue
        for i, r in enumerate(d.replicas):
            table.add_row(
                d.name if i == 0 else "",
                _state(d.status) if i == 0 else "",
                r.host or "?",
                r.backend or "-",
                r.device or "-",
                f"{d.num_gpus:g}",
                _gb(r.gpu_memory_gb if r.gpu_memory_gb is not None else d.gpu_memory_gb),
                _gb(r.gpu_memory_used_gb),
                r.error or (None if r.available else f"takes no calls: {r.reason}")
                or ("" if r.gpu_memory_capped or not d.gpu_memory_gb else "cap not enforced (no CUDA)"),
            )
    return table


def render_status(status: dict | ClusterStatus) -> Group:
    """``her-serve status``: nodes, then every deployment's replicas."""
    s = _parse(status)
    return Group(nodes_table(s), deployments_table(s))


def capacity_table(node: NodeBudget) -> Table:
    table = Table(
        title=f"{node.node} (host={node.host}): {node.gpus} GPU, "
        f"{node.free_gpu_memory_gb:g} of {node.gpu_memory_gb:g} GB GPU memory free for Ray"
    )
    for col in ("deployment", "planned replicas", "planned GPU", "planned GB",
                "running replicas", "running GPU", "running GB", "used GB"):
        table.add_column(col, justify="left" if col == "deployment" else "right")
    for r in node.rows:
        name = r.deployment if r.available else f"{r.deployment} (cannot run here)"
        table.add_row(name, str(r.planned_replicas), f"{r.planned_gpus:.2f}",
                      _gb(r.planned_memory_gb), str(r.running_replicas), f"{r.running_gpus:.2f}",
                      _gb(r.running_memory_gb), _gb(r.used_memory_gb))
    used = [r.used_memory_gb for r in node.rows if r.used_memory_gb is not None]
    table.add_row(
        "[bold]total[/bold]",
        str(sum(r.planned_replicas for r in node.rows)),
        f"{sum(r.planned_gpus for r in node.rows):.2f}",
        _gb(sum(r.planned_memory_gb for r in node.rows)),
        str(sum(r.running_replicas for r in node.rows)),
        f"{sum(r.running_gpus for r in node.rows):.2f}",
        _gb(sum(r.running_memory_gb for r in node.rows)),
        _gb(sum(used) if used else None),
        end_section=True,
    )
    verdict = "[green]fits[/green]" if not node.problems else "[red]DOES NOT FIT[/red]"
    table.caption = verdict + "".join(f"\n{p}" for p in node.problems)
    return table


def render_capacity(status: dict | ClusterStatus) -> Group:
    """``her-serve capacity``: per node, the planner's worst case next to live use."""
    return Group(*(capacity_table(n) for n in _parse(status).budget))
