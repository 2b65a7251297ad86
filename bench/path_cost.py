"""Where the served path's CPU goes: CPU milliseconds per request in every process.

    python -m bench.path_cost [--requests 512] [--py-spy DIR] [--py-spy-load "embeddings c1"]

Starts a sandbox cluster with the Gateway and the Embedder only (nothing else
competing for the 2 cores), then for ``GET /health``, one sentence at a time
and 32 at a time on ``/v1/embeddings`` reads each process's CPU time (user +
system, from /proc via psutil) before and after the load and divides by the
requests. With ``--py-spy DIR`` it also samples the Gateway and the Embedder
with py-spy during a 32-concurrent load (or ``--py-spy-load``) and writes collapsed stacks there
(``py-spy record --format raw``; open them in speedscope or read with
``bench.path_cost --top FILE``). The tables in docs/performance.md come from it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import subprocess
import time
from pathlib import Path

import aiohttp
import psutil

from bench.report import header, machine
from cluster import sandbox

TOKEN = "bench-token"
PROCESSES = ("ProxyActor", "Gateway", "Embedder", "ServeController", "raylet", "gcs_server")
KEEP = ("Gateway", "Embedder")


def sentence(i: int) -> str:
    return f"Reminder number {i}: call the dentist about the appointment on day {i % 28 + 1}."


def serve_processes() -> dict[str, list[psutil.Process]]:
    found: dict[str, list[psutil.Process]] = collections.defaultdict(list)
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        for name in PROCESSES:
            if name in cmd:
                found[name].append(p)
    return found


def cpu_s(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    return {name: sum(sum(p.cpu_times()[:2]) for p in ps) for name, ps in procs.items()}


async def load(base_url: str, kind: str, n: int) -> float:
    """Run ``n`` requests of ``kind``; returns requests/s."""
    async with aiohttp.ClientSession(base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:

        async def one(i: int) -> None:
            if kind == "health":
                request = http.get("/health")
            else:
                request = http.post("/v1/embeddings", json={"input": sentence(i)})
            async with request as r:
                await r.read()
                assert r.status == 200, r.status

        concurrency = 32 if kind == "embeddings c32" else 1
        sem = asyncio.Semaphore(concurrency)

        async def bounded(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(bounded(i) for i in range(min(n, 64))))  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(bounded(i) for i in range(n)))
        return n / (time.perf_counter() - start)


def measure(base_url: str, kind: str, n: int) -> tuple[float, dict[str, float]]:
    procs, me = serve_processes(), psutil.Process()
    before, mine = cpu_s(procs), sum(me.cpu_times()[:2])
    rate = asyncio.run(load(base_url, kind, n))
    after, mine_after = cpu_s(procs), sum(me.cpu_times()[:2])
    per = {name: (after[name] - before[name]) * 1e3 / n for name in after}
    per["load generator"] = (mine_after - mine) * 1e3 / n
    return rate, per


LOADS = ("health", "embeddings c1", "embeddings c32")


def record(base_url: str, out: Path, kind: str = "embeddings c32", seconds: int = 15) -> list[Path]:
    """py-spy the Gateway and the Embedder under one of the LOADS."""
    out.mkdir(parents=True, exist_ok=True)
    spies, files = [], []
    for name in KEEP:
        for p in serve_processes()[name]:
            path = out / f"{name}-{p.pid}.txt"
            spies.append(subprocess.Popen(
                ["py-spy", "record", "--pid", str(p.pid), "--duration", str(seconds), "--rate", "100",
                 "--format", "raw", "--nonblocking", "-o", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            files.append(path)
    deadline = time.monotonic() + seconds + 2
    while time.monotonic() < deadline:
        asyncio.run(load(base_url, kind, 256))
    for spy in spies:
        spy.wait()
    return files


def top(path: Path, n: int = 25) -> list[str]:
    """The functions with the most samples (inclusive) in a py-spy raw file."""
    inclusive, total = collections.Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        for frame in {re.sub(r" \(.*/site-packages/", " (", f) for f in stack.split(";")}:
            inclusive[frame] += int(count)
    return [f"{100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--py-spy", type=Path, default=None, dest="spy")
    parser.add_argument("--py-spy-load", default="embeddings c32", choices=LOADS, dest="spy_load")
    parser.add_argument("--top", type=Path, default=None, help="summarize a py-spy raw file")
    a = parser.parse_args()
    if a.top:
        print("\n".join(top(a.top)))
        return
    args = sandbox.serve_args()
    args["deployments"] = {k: v for k, v in args["deployments"].items() if k in KEEP}
    box = sandbox.start(TOKEN, args)
    try:
        rows = {kind: measure(box.base_url, kind, a.requests)
                for kind in LOADS}
        files = record(box.base_url, a.spy, a.spy_load) if a.spy else []
    finally:
        box.stop()
    names = [*PROCESSES, "load generator"]
    print(header(f"python -m bench.path_cost --requests {a.requests}"))
    print(f"Machine: {machine()}; Gateway + Embedder only; HTTP straight to titan's Gateway.\n")
    print("| load | req/s | " + " | ".join(names) + " | all |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for kind, (rate, per) in rows.items():
        print(f"| {kind} | {rate:.0f} | " + " | ".join(f"{per.get(n, 0):.2f}" for n in names)
              + f" | {sum(per.values()):.2f} |")
    for path in files:
        print(f"\n{path.name}:\n" + "\n".join(top(path)))


if __name__ == "__main__":
    main()
