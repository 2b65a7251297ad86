"""Far more TTS callers than the cluster can serve: admission keeps served latency bounded.

    python -m bench.overload [--clients 200] [--duration 60] [--unloaded 20] [--runs 2]

First one caller alone for ``--unloaded`` seconds: the unloaded latency of the
same request, in the same run. Then each of ``--clients`` callers posts the
phone daemon's ``POST /v1/tts`` in a loop; on a 503 or 429 it waits what
``Retry-After`` says (at most 10 s), as the Python client does. Meanwhile this
process samples the resident memory of the Serve processes (gateways,
replicas, proxy). The target (issue 12): while shedding, the served p99 is at
most twice the unloaded p99 plus 1 s, and a shed request is answered at once.
The shed p99 is also given past the first 5 s: the 200 callers' first requests
arrive together, on 200 new connections. ``--runs`` repeats it on the same
cluster. The chaos test runs it once, shorter.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

import httpx
import psutil

from bench.failover import SENTENCES, Outcome
from clients.retry import RetryPolicy
from bench.report import SpawnedLoad, header, publish
from cluster import sandbox

SHED = (429, 503)
OPENING_S = 5.0
MAX_RETRY_AFTER_S = RetryPolicy.max_retry_after_s  # what the Python client honours at most


PHONE_TTS = ("/v1/tts", [{"text": s} for s in SENTENCES])


async def crowd(base_url: str, headers: dict, clients: int, duration_s: float,
                request: tuple[str, list[dict]] = PHONE_TTS, start_at: float = 0.0,
                timeout_s: float = 90.0) -> list[Outcome]:
    """``clients`` callers in a loop for ``duration_s``, posting ``request`` (a path and the
    bodies to cycle through). A 503 or 429 without Retry-After or without the
    gateway's JSON error counts as a status of its own."""
    path, bodies = request
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    outcomes: list[Outcome] = []
    end = time.monotonic() + duration_s
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s,
                                 limits=httpx.Limits(max_connections=clients)) as client:

        async def caller(i: int) -> None:
            n = 0
            while time.monotonic() < end:
                sent, wait = time.monotonic(), 0.0
                try:
                    r = await client.post(path, json=bodies[(i + n) % len(bodies)])
                    status: int | str = r.status_code
                    if status in SHED:
                        if "retry-after" not in r.headers:
                            status = f"{status} without Retry-After"
                        elif not r.headers.get("content-type", "").startswith("application/json"):
                            status = f"{status} without the JSON error"
                        wait = min(MAX_RETRY_AFTER_S, float(r.headers.get("retry-after", 1)))
                    outcomes.append(Outcome(sent, time.monotonic(), status, r.headers.get("x-served-by")))
                except httpx.HTTPError as exc:
                    outcomes.append(Outcome(sent, time.monotonic(), type(exc).__name__, None))
                n += 1
                await asyncio.sleep(wait)

        await asyncio.gather(*(caller(i) for i in range(clients)))
    return outcomes


def serve_memory_mb() -> dict[str, float]:
    """Resident memory of this machine's Serve processes (replicas and proxies) in MB,
    summed per deployment (Ray retitles a process with the method it runs)."""
    by_name: dict[str, float] = {}
    for p in psutil.process_iter(["cmdline", "memory_info"]):
        title = (" ".join(p.info["cmdline"] or []).split() or [""])[0].removeprefix("ray::")
        if title.startswith(("ServeReplica", "ProxyActor")) and p.info["memory_info"]:
            name = title.split(":")[-1].split(".")[0]
            by_name[name] = by_name.get(name, 0.0) + p.info["memory_info"].rss / 2**20
    return by_name


@dataclass
class OverloadSummary:
    clients: int
    duration_s: float
    statuses: dict[str, int]
    served_per_s: float
    unloaded_p99_s: float  # one caller alone, same request, same run
    p50_served_s: float
    p99_served_s: float
    p50_shed_s: float
    p99_shed_s: float
    p99_shed_after_burst_s: float  # past the first OPENING_S, when the crowd arrives at once
    longest_wait_s: float
    memory: list[tuple[float, dict[str, float]]]  # (seconds into the load, MB per deployment)

    @property
    def memory_mb(self) -> list[tuple[float, float]]:
        """(seconds into the load, MB of every Serve process together)."""
        return [(t, sum(by_name.values())) for t, by_name in self.memory]

    @property
    def memory_growth_mb(self) -> float:
        """From a third of the way in (queues full, models warm) to the end."""
        settled = [mb for t, mb in self.memory_mb if t >= self.duration_s / 3]
        return settled[-1] - settled[0] if len(settled) > 1 else 0.0

    def memory_lines(self) -> list[str]:
        """MB per deployment at the start, a third of the way in, and the end."""
        third = next(by_name for t, by_name in self.memory if t >= self.duration_s / 3)
        first, last = self.memory[0][1], self.memory[-1][1]
        return [
            "| Serve process | MB at start | at 1/3 | at the end |",
            "|---|---|---|---|",
            *(f"| {name} | {first.get(name, 0):.0f} | {third.get(name, 0):.0f} "
              f"| {last.get(name, 0):.0f} |" for name in sorted({*first, *last})),
        ]

    @property
    def target_s(self) -> float:
        """The served p99 allowed while shedding: twice the unloaded p99, plus 1 s."""
        return 2 * self.unloaded_p99_s + 1.0

    HEADER = [
        "| run | clients | answers by status | served/s | unloaded p99 | served p50 / p99 "
        "| target (2x unloaded p99 + 1 s) | shed p50 / p99 | shed p99 past the first "
        f"{OPENING_S:g} s | longest wait | Serve memory at start, 1/3, end |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(self, run: int) -> str:
        mem = self.memory_mb
        return (
            f"| {run} | {self.clients} | {self.statuses} | {self.served_per_s:.1f} "
            f"| {self.unloaded_p99_s:.2f} s | {self.p50_served_s:.2f} / {self.p99_served_s:.2f} s "
            f"| {self.target_s:.2f} s ({'met' if self.p99_served_s <= self.target_s else 'missed'}: "
            f"{self.p99_served_s / self.target_s:.2f}x) "
            f"| {self.p50_shed_s:.3f} / {self.p99_shed_s:.3f} s | {self.p99_shed_after_burst_s:.3f} s "
            f"| {self.longest_wait_s:.1f} s | {mem[0][1]:.0f} / "
            f"{next(mb for t, mb in mem if t >= self.duration_s / 3):.0f} / {mem[-1][1]:.0f} MB |"
        )


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0


def run_overload(box: sandbox.Sandbox, clients: int, duration_s: float,
                 unloaded_s: float = 20.0) -> OverloadSummary:
    alone = SpawnedLoad(crowd, box.base_url, box.headers(), 1, unloaded_s).join()
    unloaded = [o.done_at - o.sent_at for o in alone if o.ok]
    if not unloaded:
        raise RuntimeError(f"one caller alone was never served: {[o.status for o in alone][:5]}")
    load = SpawnedLoad(crowd, box.base_url, box.headers(), clients, duration_s)
    memory = []
    while (t := load.wait_until(len(memory) * 2.0) - load.start_at) < duration_s:
        memory.append((t, serve_memory_mb()))
    outcomes = load.join()
    settled_from = load.start_at + OPENING_S
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    served = [o.done_at - o.sent_at for o in outcomes if o.ok]
    shed = [o.done_at - o.sent_at for o in outcomes if o.status in SHED]
    shed_later = [o.done_at - o.sent_at for o in outcomes
                  if o.status in SHED and o.sent_at >= settled_from]
    return OverloadSummary(
        clients, duration_s, dict(sorted(statuses.items())), len(served) / duration_s,
        pct(unloaded, 0.99), pct(served, 0.5), pct(served, 0.99),
        pct(shed, 0.5), pct(shed, 0.99), pct(shed_later, 0.99),
        max((o.done_at - o.sent_at for o in outcomes), default=0.0), memory,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--unloaded", type=float, default=20,
                        help="seconds of one caller alone first (the unloaded latency)")
    parser.add_argument("--runs", type=int, default=2, help="runs on the same cluster")
    a = parser.parse_args()
    box = sandbox.start("overload-token")
    try:
        runs = [run_overload(box, a.clients, a.duration, a.unloaded) for _ in range(a.runs)]
    finally:
        box.stop()
    growth = ", ".join(f"{s.memory_growth_mb:+.0f} MB" for s in runs)
    lines = [
        "## TTS overload (admission)",
        "",
        header(f"python -m bench.overload --clients {a.clients} --duration {a.duration:g} "
               f"--unloaded {a.unloaded:g} --runs {a.runs}"),
        f"First one caller alone for {a.unloaded:g} s (the unloaded p99), then {a.clients} clients "
        "each posting `/v1/tts` (the phone's JSON, one short sentence, "
        f"KokoroTTS on CPU) in a loop for {a.duration:g} s, waiting `Retry-After` (at most 10 s, "
        "as the Python client) after a 503; each run on the same cluster. The gateway admits a "
        "request only when the sentences in flight take at most `SERVE_SPEECH__ADMISSION_WAIT_S` "
        "at the measured service rate, and sheds the rest at once, with Retry-After spread over "
        "1-10 s. The callers' first requests arrive together on new connections, hence the shed "
        f"p99 past the first {OPENING_S:g} s. Memory: resident set of every Serve process "
        "(gateways, replicas, proxy), sampled every 2 s; from a third of the way in to the end "
        f"it grew {growth} (by run).",
        "",
        *OverloadSummary.HEADER,
        *(s.row(i) for i, s in enumerate(runs, 1)),
        "",
        f"Memory by process, run {len(runs)}:",
        "",
        *runs[-1].memory_lines(),
    ]
    publish("overload", lines)


if __name__ == "__main__":
    main()
