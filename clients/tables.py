"""Rich tables for the CLI. Pure: data in, renderables out, so they are testable without a terminal."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from api.schemas import ModelList

PREVIEW = 60
"""Characters of a text shown in a table cell."""


def clip(value: Any, width: int = PREVIEW) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def cell(value: Any, width: int = PREVIEW) -> Text:
    """A table cell shown as is: server text must never be read as rich markup."""
    return Text(clip(value, width))


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def records_table(rows: list[dict], title: str | None = None) -> Table:
    """One row per dict, one column per key seen (in first-seen order)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(cell(row[c]) if c in row else "" for c in columns))
    return table


def generic(data: Any, title: str | None = None) -> RenderableType:
    """Any JSON answer: scalars as a key/value table, lists of objects as their own tables.

    Used for answers whose shape this client does not pin down (``/v1/status``
    when its renderer cannot read it).
    """
    if _is_records(data):
        return records_table(data, title)
    if not isinstance(data, dict):
        return cell(data, 10_000)
    parts: list[RenderableType] = []
    scalars = Table(title=title, title_justify="left", show_header=False)
    scalars.add_column(style="bold")
    scalars.add_column(overflow="fold")
    for key, value in data.items():
        if _is_records(value):
            parts.append(records_table(value, title=key))
        elif isinstance(value, dict) and value and all(_is_records(v) for v in value.values()):
            parts.extend(records_table(v, title=f"{key}: {k}") for k, v in value.items())
        else:
            scalars.add_row(cell(key), cell(value, 200))
    return Group(*([scalars] if scalars.row_count else []), *parts)


def retrieval_view(result: dict) -> RenderableType:
    """``/v1/retrieve`` for a person: the hits with their text, the entities and related
    documents the graph added, and where the time went."""
    hits = Table(title=Text(f"results for: {clip(result['query'], 60)}"), title_justify="left")
    for col, justify in (("#", "right"), ("score", "right"), ("id", "left"), ("text", "left")):
        hits.add_column(col, justify=justify, overflow="fold")
    for rank, hit in enumerate(result["results"], 1):
        hits.add_row(str(rank), f"{hit['score']:.3f}", cell(hit["id"], 80), cell(hit["text"], 300))
    parts: list[RenderableType] = [hits if hits.row_count else Text("no document matched")]
    if result["entities"]:
        parts.append(records_table([{k: e[k] for k in ("name", "label", "hops", "documents")}
                                    for e in result["entities"]], title="entities"))
    if result["related"]:
        parts.append(records_table(result["related"], title="related"))
    timings = " · ".join(f"{stage} {ms:.1f}" for stage, ms in result["timings_ms"].items())
    parts.append(Text(f"ms: {timings}", style="dim"))
    return Group(*parts)


def models_table(models: ModelList) -> Table:
    table = Table(title="models", title_justify="left")
    for col in ("deployment", "model", "task", "status", "backend", "device", "nodes"):
        table.add_column(col)
    for card in models.data:
        status = Text(card.status, style="green" if card.status == "ready" else "red")
        if card.reason:
            status.append(f" ({clip(card.reason, 40)})", style="dim")
        table.add_row(*map(cell, (card.deployment, card.id, card.task)), status,
                      *map(cell, (card.backend or "", card.device or "", ", ".join(card.nodes))))
    return table


def embeddings_table(texts: list[str], vectors: list[list[float]], preview: int = 4) -> Table:
    table = Table(title="embeddings", title_justify="left")
    for col, justify in (("#", "right"), ("text", "left"), ("dims", "right"),
                         ("norm", "right"), ("preview", "left")):
        table.add_column(col, justify=justify)
    for i, (text, vec) in enumerate(zip(texts, vectors)):
        norm = math.sqrt(sum(x * x for x in vec))
        head = ", ".join(f"{x:+.4f}" for x in vec[:preview])
        table.add_row(str(i), cell(text, 40), str(len(vec)), f"{norm:.4f}", Text(f"[{head}, …]"))
    return table


def capacity_tables(loads: list) -> list[Table]:
    """One table per node from ``topology.capacity.plan``: what could land there, and the verdict."""
    tables = []
    for load in loads:
        node = load.node
        problems = load.problems()
        table = Table(
            title=f"{node.name} ({node.role}): {node.gpus} GPU, {node.gpu_memory_gb:g} GB GPU "
                  f"memory, {node.free_gpu_memory_gb:g} GB free for Ray",
            title_justify="left",
            caption=Text("fits" if not problems else "DOES NOT FIT: " + "; ".join(problems),
                         style="green" if not problems else "bold red"),
            caption_justify="left",
        )
        table.add_column("deployment")
        table.add_column("replicas", justify="right")
        table.add_column("GPU", justify="right")
        table.add_column("GPU mem GB", justify="right")
        for dep, replicas, gpus, mem in load.rows:
            table.add_row(dep, str(replicas), f"{gpus:.2f}", f"{mem:.2f}")
        for what, gb in node.reserved.items():
            table.add_row(Text(f"({what}, outside Ray)", style="dim"), "", "", f"{gb:.2f}")
        table.add_section()
        table.add_row(Text("total in Ray", style="bold"), "", f"{load.gpus:.2f}",
                      f"{load.memory_gb:.2f}")
        table.add_row(Text("budget", style="dim"), "", f"{node.gpus:.2f}",
                      f"{node.free_gpu_memory_gb:.2f}")
        tables.append(table)
    return tables
