"""Shared benchmark plumbing: load generation, percentiles, and the results file."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import multiprocessing
import os
import platform
import re
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


@dataclass
class Run:
    """Latencies (s) of one load run and its wall time."""

    latencies: list[float]
    wall_s: float

    def pct(self, p: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall_s

    def row(self, label: str) -> str:
        return (
            f"| {label} | {self.pct(50) * 1e3:.1f} | {self.pct(95) * 1e3:.1f} "
            f"| {self.throughput:.1f} |"
        )


def run_threads(call: Callable[[int], object], n: int, concurrency: int) -> Run:
    """``n`` calls of ``call(i)`` from ``concurrency`` threads."""

    def timed(i: int) -> float:
        t = time.perf_counter()
        call(i)
        return time.perf_counter() - t

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(timed, range(n)))
    return Run(lat, time.perf_counter() - start)


async def measure(call: Callable[[int], Awaitable[object]], n: int, concurrency: int) -> Run:
    """``n`` awaits of ``call(i)`` with at most ``concurrency`` in flight."""
    sem, lat = asyncio.Semaphore(concurrency), []

    async def timed(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            await call(i)
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(n)))
    return Run(lat, time.perf_counter() - start)


def replica_threads(deployment: str) -> int:
    """The compute threads a replica of ``deployment`` gets: its num_cpus in serve_config.yaml,
    rounded up (``deployments.runtime.cpu_threads``)."""
    from cluster import sandbox

    return max(1, math.ceil(sandbox.serve_args()["deployments"][deployment]["num_cpus"]))


@contextmanager
def thread_budget(deployment: str):
    """Engines loaded inside compute with ``deployment``'s replica budget: the in-process
    side of a served/in-process ratio uses the same threads as the replica."""
    from deployments.runtime import CPU_THREADS_ENV

    before = os.environ.get(CPU_THREADS_ENV)
    os.environ[CPU_THREADS_ENV] = str(replica_threads(deployment))
    try:
        yield int(os.environ[CPU_THREADS_ENV])
    finally:
        if before is None:
            os.environ.pop(CPU_THREADS_ENV)
        else:
            os.environ[CPU_THREADS_ENV] = before


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, no GPU, "
        f"Python {platform.python_version()}"
    )


def header(command: str) -> str:
    return (
        f"Command: `{command}`  \nMachine: {machine()}  \n"
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
    )


def publish(name: str, lines: list[str]) -> None:
    """Write this benchmark's section of docs/BENCHMARKS.md and print it."""
    write_section(name, "\n".join(lines))
    print("\n".join(lines))


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


def _run_coroutine(fn: Callable[..., Awaitable[object]], args: tuple, start_at: float):
    return asyncio.run(fn(*args, start_at=start_at))


class SpawnedLoad:
    """An async load generator in a process of its own (spawned).

    Killing or starting a node from this process, and this process's GIL,
    must not pause the client and show up as gaps. ``fn`` is a module-level
    coroutine function called as ``fn(*args, start_at=...)``; it should begin
    at ``start_at`` (CLOCK_MONOTONIC is machine-wide, so both processes agree).
    """

    STARTUP_S = 3.0  # a spawned Python imports httpx and the bench module well within this

    def __init__(self, fn: Callable[..., Awaitable[object]], *args):
        self.start_at = time.monotonic() + self.STARTUP_S
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self.future = self.pool.submit(_run_coroutine, fn, args, self.start_at)

    def wait_until(self, offset_s: float) -> float:
        """Sleep until ``offset_s`` into the load; returns that moment (monotonic)."""
        time.sleep(max(0.0, self.start_at + offset_s - time.monotonic()))
        return time.monotonic()

    def join(self):
        try:
            return self.future.result()
        finally:
            self.pool.shutdown()

