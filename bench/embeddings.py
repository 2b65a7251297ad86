"""/v1/embeddings served vs the same engine in-process, and the dynamic-batching gain.

    python -m bench.embeddings [--requests 256]

Starts its own Titan + Panda sandbox cluster (cluster.sandbox), so it needs no
running cluster and leaves none behind.
"""

from __future__ import annotations

import argparse
import asyncio
import copy

import httpx

from bench.report import Run, header, measure, publish, run_threads
from cluster import sandbox
from deployments.embedding import EmbeddingEngine
from deployments.settings import EmbeddingSettings

CONCURRENCY = (1, 8, 32)
TOKEN = "bench-token"


def sentence(i: int) -> str:
    return f"Reminder number {i}: call the dentist about the appointment on day {i % 28 + 1}."


def in_process(n: int) -> dict[int, Run]:
    engine = EmbeddingEngine(EmbeddingSettings(), profile="cpu")
    engine.load()
    engine.embed([sentence(0)])  # warm-up
    return {c: run_threads(lambda i: engine.embed([sentence(i)]), n, c) for c in CONCURRENCY}


def served(box: sandbox.Sandbox, n: int, concurrency: tuple[int, ...]) -> dict[int, Run]:
    async def load() -> dict[int, Run]:
        async with httpx.AsyncClient(
            base_url=box.base_url, headers=box.headers(), timeout=120,
            limits=httpx.Limits(max_connections=64),
        ) as client:

            async def call(i: int) -> None:
                r = await client.post("/v1/embeddings", json={"input": sentence(i)})
                r.raise_for_status()

            out = {}
            for c in concurrency:
                await measure(call, 16, c)  # warm-up
                out[c] = await measure(call, n, c)
            return out

    return asyncio.run(load())


def via_handle(n: int, concurrency: int) -> Run:
    """Driver -> Embedder through a DeploymentHandle: batching without HTTP in the way."""
    from ray import serve

    handle = serve.get_deployment_handle("Embedder", app_name="assistant")

    async def load() -> Run:
        async def call(i: int) -> None:
            await handle.embed.remote([sentence(i)])

        await measure(call, 16, concurrency)  # warm-up
        return await measure(call, n, concurrency)

    return asyncio.run(load())


def with_batch_size(args: dict, size: int) -> dict:
    args = copy.deepcopy(args)
    args["deployments"]["Embedder"].setdefault("user_config", {})["max_batch_size"] = size
    return args


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=256)
    n = parser.parse_args().requests

    local = in_process(n)
    box = sandbox.start(TOKEN)
    try:
        batched = served(box, n, CONCURRENCY)
        handle_batched = via_handle(n, 32)
        box.deploy(with_batch_size(sandbox.serve_args(), 1))
        unbatched = served(box, n, (32,))
        handle_unbatched = via_handle(n, 32)
    finally:
        box.stop()

    lines = [
        "## Embeddings (`/v1/embeddings`, all-MiniLM-L6-v2 on CPU)",
        "",
        header(f"python -m bench.embeddings --requests {n}"),
        f"One sentence per request, {n} requests per row. Served = HTTP -> Serve proxy -> "
        "Gateway -> Embedder on the local two-node cluster (titan + panda on one machine). "
        "In-process = `EmbeddingEngine.embed` called from threads, no batching.",
        "",
        "| path, concurrency | p50 ms | p95 ms | req/s |",
        "|---|---|---|---|",
    ]
    for c in CONCURRENCY:
        lines.append(local[c].row(f"in-process, {c}"))
        lines.append(batched[c].row(f"served (batched), {c}"))
    lines.append(unbatched[32].row("served, batching off (max_batch_size 1), 32"))
    lines.append(handle_batched.row("handle -> Embedder (batched), 32"))
    lines.append(handle_unbatched.row("handle -> Embedder, batching off, 32"))
    lines += ["", "Ratios from this run:", ""]
    for c in CONCURRENCY:
        lines.append(
            f"- concurrency {c}: served p50 / in-process p50 = "
            f"{batched[c].pct(50) / local[c].pct(50):.2f}x; served throughput / in-process = "
            f"{batched[c].throughput / local[c].throughput:.2f}x"
        )
    lines.append(
        f"- dynamic batching gain at concurrency 32: {batched[32].throughput / unbatched[32].throughput:.2f}x "
        f"throughput over HTTP; {handle_batched.throughput / handle_unbatched.throughput:.2f}x "
        "through a handle (no proxy or gateway in the way)"
    )
    publish("embeddings", lines)


if __name__ == "__main__":
    main()
