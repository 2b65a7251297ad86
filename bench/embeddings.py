"""/v1/embeddings served against the best the same engine does in one process, and the
gateway's own overhead (issue 14's targets).

    python -m bench.embeddings [--requests 256] [--rounds 2]

In-process: ``EmbeddingEngine.embed`` of one sentence (p50), and of the same
sentences 32 at a time, on torch's default threads and on the replica's engine
lanes (one thread each, side by side): the better is the engine's physical limit.
Served: one sentence per request over HTTP to Titan's Gateway (direct ingress),
alone and 32 at a time; ``GET /health``; an authenticated round trip with one
handle hop to a trivial method (``POST /v1/voice/cancel`` of an unknown turn: the
VoiceGraph looks it up and answers 404). Then the same engine in this process is
timed paired with the served calls, one sentence and 32 in flight, one of each in
turn beside the running cluster (this machine's speed moves for seconds at a time,
docs/performance.md). Last, the Embedder's batch wait is set back to 5 ms, to show
the measurement behind ``batch_wait_timeout_s: 0``.
Starts its own Titan + Panda sandbox cluster and leaves none behind.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import time

import aiohttp
import orjson

from bench.report import Run, header, measure, publish, replica_threads
from cluster import sandbox
from deployments.embedding import EmbeddingEngine
from deployments.runtime import EngineLanes
from deployments.settings import EmbeddingSettings

TOKEN = "bench-token"
BATCH = 32
TARGET_THROUGHPUT = 0.5
TARGET_SINGLE_MS = 5.0
TARGET_HEALTH_MS = 2.0
TARGET_HOP_MS = 5.0


def sentence(i: int) -> str:
    return f"Reminder number {i}: call the dentist about the appointment on day {i % 28 + 1}."


class LocalEngine:
    """The engine in this process, loaded once, with the replica's lanes (one thread
    each): timed alone before the cluster starts, then paired with the served calls."""

    def __init__(self, lanes: int):
        self.engine = EmbeddingEngine(EmbeddingSettings(), profile="cpu")
        self.engine.load()
        self.lanes, self.pool = lanes, EngineLanes(lanes, threads=1).pool
        self.engine.embed([sentence(i) for i in range(BATCH)])  # warm-up
        self.on_lanes([sentence(i) for i in range(BATCH)])

    def close(self) -> None:
        self.pool.shutdown()

    def batched(self, texts: list[str]) -> float:
        """Sentences/s, BATCH at a time on torch's default threads."""
        t = time.perf_counter()
        for start in range(0, len(texts), BATCH):
            self.engine.embed(texts[start:start + BATCH])
        return len(texts) / (time.perf_counter() - t)

    def on_lanes(self, texts: list[str]) -> float:
        """Sentences/s on the lanes side by side, BATCH // lanes at a time each."""
        per_lane = BATCH // self.lanes
        t = time.perf_counter()
        list(self.pool.map(self.engine.embed,
                           [texts[s:s + per_lane] for s in range(0, len(texts), per_lane)]))
        return len(texts) / (time.perf_counter() - t)


def in_process(n: int, local: LocalEngine) -> tuple[float, float, float]:
    """(p50 ms of one sentence, sentences/s embedded 32 at a time on torch's default
    threads, sentences/s on the single-threaded lanes): the best this engine does on
    CPU, and what the served side is compared with."""
    single = []
    for i in range(n):
        t = time.perf_counter()
        local.engine.embed([sentence(i)])
        single.append(time.perf_counter() - t)
    texts = [sentence(i) for i in range(n)]
    return statistics.median(single) * 1e3, local.batched(texts), local.on_lanes(texts)


def session(base_url: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url, headers={"Authorization": f"Bearer {TOKEN}"})


async def embed(http: aiohttp.ClientSession, text: str) -> None:
    async with http.post("/v1/embeddings", json={"input": text}) as r:
        await r.read()
        assert r.status == 200, r.status


async def served(base_url: str, n: int) -> dict[str, Run]:
    async with session(base_url) as http:

        async def get_ok(path: str) -> None:
            async with http.get(path) as r:
                await r.read()
                assert r.status == 200, r.status

        async def hop(i: int) -> None:
            async with http.post("/v1/voice/cancel", json={"turn_id": f"bench-{i}"}) as r:
                await r.read()
                assert r.status == 404, r.status

        runs = {"stall": await health_while_large_bodies(http)}
        for name, call, concurrency in (
            ("health", lambda i: get_ok("/health"), 1),
            ("hop", hop, 1),
            ("single", lambda i: embed(http, sentence(i)), 1),
            ("c32", lambda i: embed(http, sentence(i)), BATCH),
        ):
            await measure(call, 32, concurrency)  # warm-up
            runs[name] = await measure(call, n, concurrency)
        return runs


async def paired_single(base_url: str, n: int, local: LocalEngine) -> tuple[float, float, float]:
    """p50 ms of one sentence in-process on torch's default threads, in-process on one
    single-threaded lane (as the replica computes it), and served, one of each in turn:
    this machine's speed moves by up to 1.6x for seconds at a time, and the engine beside
    the running cluster is slower than alone (docs/performance.md), so the three meet
    the same conditions."""
    wide, narrow, remote = [], [], []
    async with session(base_url) as http:
        for i in range(n + 16):  # the first 16 warm up
            t = time.perf_counter()
            local.engine.embed([sentence(i)])
            t1 = time.perf_counter()
            local.pool.submit(local.engine.embed, [sentence(i)]).result()
            t2 = time.perf_counter()
            await embed(http, sentence(i))
            if i >= 16:
                wide.append(t1 - t)
                narrow.append(t2 - t1)
                remote.append(time.perf_counter() - t2)
    return tuple(statistics.median(x) * 1e3 for x in (wide, narrow, remote))


async def paired_throughput(base_url: str, n: int, local: LocalEngine, turns: int = 3
                            ) -> tuple[float, float, float]:
    """Sentences/s of the in-process engine (32 at a time on torch's default threads, and
    on its single-threaded lanes) and served at concurrency 32, in turn beside the
    running cluster, ``turns`` times each; the medians."""
    texts = [sentence(i) for i in range(n)]
    wide, narrow, remote = [], [], []
    async with session(base_url) as http:
        await measure(lambda i: embed(http, sentence(i)), 64, BATCH)  # warm-up
        for _ in range(turns):
            wide.append(local.batched(texts))
            narrow.append(local.on_lanes(texts))
            remote.append((await measure(lambda i: embed(http, texts[i]), n, BATCH)).throughput)
    return tuple(statistics.median(x) for x in (wide, narrow, remote))


async def health_while_large_bodies(http: aiohttp.ClientSession, bodies: int = 3) -> Run:
    """``GET /health`` latencies while 7 MB JSON bodies (a million integers) are parsed and
    refused: what one large request costs every other request (issue 12: at most 50 ms)."""
    body = orjson.dumps({"input": list(range(10**6))})
    done = asyncio.Event()

    async def post_large() -> None:
        for _ in range(bodies):
            async with http.post("/v1/embeddings", data=body,
                                 headers={"Content-Type": "application/json"}) as r:
                await r.read()
                assert r.status == 400, r.status
        done.set()

    sender = asyncio.create_task(post_large())
    latencies, start = [], time.perf_counter()
    while not done.is_set():
        t = time.perf_counter()
        async with http.get("/health") as r:
            await r.read()
        latencies.append(time.perf_counter() - t)
    await sender
    return Run(latencies, time.perf_counter() - start)


def with_batch_wait(args: dict, wait_s: float) -> dict:
    args = copy.deepcopy(args)
    args["deployments"]["Embedder"].setdefault("user_config", {})["batch_wait_timeout_s"] = wait_s
    return args


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    a = parser.parse_args()
    n = a.requests

    threads = replica_threads("Embedder")
    engine = LocalEngine(threads)
    local = [in_process(n, engine) for _ in range(a.rounds)]
    box = sandbox.start(TOKEN)
    try:
        rounds = [asyncio.run(served(box.base_url, n)) for _ in range(a.rounds)]
        pairs = [asyncio.run(paired_single(box.base_url, n, engine)) for _ in range(a.rounds)]
        flows = [asyncio.run(paired_throughput(box.base_url, n, engine))
                 for _ in range(a.rounds)]
        waited_s = float(sandbox.serve_args()["deployments"]["Embedder"]["user_config"]
                         ["batch_wait_timeout_s"])
        box.deploy(with_batch_wait(sandbox.serve_args(), 0.005))
        waited = asyncio.run(served(box.base_url, n))
    finally:
        engine.close()
        box.stop()

    lines = [
        "## Embeddings and the gateway's overhead (`/v1/embeddings`, all-MiniLM-L6-v2 on CPU)",
        "",
        header(f"python -m bench.embeddings --requests {n} --rounds {a.rounds}"),
        f"{n} requests per row, one sentence each. Served = HTTP straight to Titan's Gateway "
        "(Serve's direct ingress, throughput-optimized mode) -> Embedder, on the local two-node "
        "cluster with the whole `serve_config.yaml` deployed; the load generator (aiohttp) "
        "shares the 2 cores. In-process = `EmbeddingEngine.embed` in one process: one "
        "sentence at a time (torch's default threads), and the same sentences 32 at a time on "
        f"torch's default threads, and on {threads} single-threaded engine lanes "
        f"(`EngineLanes`) {BATCH // threads} at a time each; the better of the two is the "
        f"engine's best. The Embedder replica computes on {threads} such lanes (its "
        "`num_cpus`).",
        "",
        "| round | in-process 1 sentence p50 | served 1 sentence p50 | served - in-process "
        f"(target <= {TARGET_SINGLE_MS:g} ms) | in-process batched 32 | in-process on "
        f"{threads} lanes | served at concurrency 32 | served / in-process best (target >= "
        f"{TARGET_THROUGHPUT}x) | `GET /health` p50 (target <= {TARGET_HEALTH_MS:g} ms) "
        f"| auth + one handle hop p50 (target <= {TARGET_HOP_MS:g} ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, ((single_ms, batched, on_lanes), run) in enumerate(zip(local, rounds), 1):
        lines.append(
            f"| {i} | {single_ms:.1f} ms | {run['single'].pct(50) * 1e3:.1f} ms "
            f"| {run['single'].pct(50) * 1e3 - single_ms:+.1f} ms | {batched:.0f}/s "
            f"| {on_lanes:.0f}/s | {run['c32'].throughput:.0f}/s "
            f"| {run['c32'].throughput / max(batched, on_lanes):.2f}x "
            f"| {run['health'].pct(50) * 1e3:.2f} ms | {run['hop'].pct(50) * 1e3:.2f} ms |"
        )
    lines += [
        "",
        "One sentence, paired: the same engine in this process, on torch's default threads and "
        "on one single-threaded lane (as the replica computes a lone sentence), and the served "
        "request, one of each in turn beside the running cluster, so that each side meets the "
        "same machine:",
        "",
        "| round | in-process, default threads | in-process, one lane | served | served - the "
        f"better in-process (target <= {TARGET_SINGLE_MS:g} ms) |",
        "|---|---|---|---|---|",
        *(f"| {i} | {wide:.1f} ms | {narrow:.1f} ms | {remote:.1f} ms "
          f"| {remote - min(wide, narrow):+.1f} ms |"
          for i, (wide, narrow, remote) in enumerate(pairs, 1)),
    ]
    lines += [
        "",
        "32 in flight, paired: the same engine in this process (32 sentences at a time on "
        f"torch's default threads, and on {threads} lanes) and served at concurrency 32, in "
        "turn beside the running cluster, three times each (medians):",
        "",
        f"| round | in-process batched 32 | in-process on {threads} lanes | served at "
        "concurrency 32 | served / the better in-process |",
        "|---|---|---|---|---|",
        *(f"| {i} | {wide:.0f}/s | {narrow:.0f}/s | {remote:.0f}/s "
          f"| {remote / max(wide, narrow):.2f}x |"
          for i, (wide, narrow, remote) in enumerate(flows, 1)),
    ]
    last = rounds[-1]
    lines += [
        "",
        "One request must not stall the others (issue 12: by at most 50 ms): `GET /health` "
        "back to back while three 7 MB bodies (a million integers each) are parsed and "
        "refused with 400:",
        "",
        "| round | `/health` p50 alone | p50 / p99 / max while the large bodies are processed "
        "| added at the worst |",
        "|---|---|---|---|",
        *(f"| {i} | {run['health'].pct(50) * 1e3:.1f} ms | {run['stall'].pct(50) * 1e3:.1f} / "
          f"{run['stall'].pct(99) * 1e3:.1f} / {max(run['stall'].latencies) * 1e3:.1f} ms "
          f"| {(max(run['stall'].latencies) - run['health'].pct(50)) * 1e3:.1f} ms |"
          for i, run in enumerate(rounds, 1)),
    ]
    lines += [
        "",
        f"Batch wait, measured (same cluster, Embedder redeployed with "
        f"`batch_wait_timeout_s: 0.005`, then compared with the last round at "
        f"{waited_s:g} s):",
        "",
        "| Embedder batch wait | 1 sentence p50 | concurrency 32 p50 | concurrency 32 throughput |",
        "|---|---|---|---|",
        f"| {waited_s * 1e3:g} ms (serve_config.yaml) | {last['single'].pct(50) * 1e3:.1f} ms "
        f"| {last['c32'].pct(50) * 1e3:.1f} ms | {last['c32'].throughput:.0f}/s |",
        f"| 5 ms | {waited['single'].pct(50) * 1e3:.1f} ms | {waited['c32'].pct(50) * 1e3:.1f} ms "
        f"| {waited['c32'].throughput:.0f}/s |",
    ]
    publish("embeddings", lines)


if __name__ == "__main__":
    main()
