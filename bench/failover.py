"""TTS under a node's death: a paced load, a hard kill, a return, and the figures.

    python -m bench.failover [--duration 30] [--rate 12]      # also `make chaos`

Runs two placements on their own sandbox cluster (titan + panda on this
machine), each with panda hard-killed a quarter of the way in and brought back
at half-way:
  * this project's: one TTS replica per node, PreferredHostRouter preferring
    panda, per-attempt deadline and one retry on the other node;
  * Ray's native label fallback: one replica with label_selector panda and
    fallback_strategy titan and the default router (the gateway's retry on a
    lost replica still applies, so only placement differs).
The chaos tests (tests/chaos) call ``run_scenario`` with shorter settings.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import time
from dataclasses import dataclass

import httpx

from bench.report import SpawnedLoad, header, publish
from cluster import sandbox

TTS_DEPLOYMENT = "PiperTTS"  # CPU-fast enough for >= 10 req/s on two cores
# Short replies, as a phone assistant gives between longer answers: at ~60 ms of
# Piper each, ten a second leave this 2-core machine room for the rest of the path.
SENTENCES = ["Okay.", "Sure.", "Done.", "Got it."]


@dataclass
class Outcome:
    sent_at: float
    done_at: float
    status: int | str  # HTTP status, or the exception's name
    host: str | None  # X-Served-By: the node whose replica spoke

    @property
    def ok(self) -> bool:
        return self.status == 200


async def drive(base_url: str, headers: dict, rate_hz: float, duration_s: float,
                start_at: float = 0.0, timeout_s: float = 10.0) -> list[Outcome]:
    """From ``start_at`` (monotonic) on, send one TTS request every 1/rate seconds for
    ``duration_s``; wait for all."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    outcomes: list[Outcome] = []
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s,
                                 limits=httpx.Limits(max_connections=200)) as client:

        async def one(i: int) -> None:
            sent = time.monotonic()
            try:
                r = await client.post("/v1/audio/speech", json={
                    "model": "piper", "input": SENTENCES[i % len(SENTENCES)],
                    "voice": "alloy", "response_format": "pcm",
                })
                await r.aread()
                outcomes.append(Outcome(sent, time.monotonic(), r.status_code,
                                        r.headers.get("x-served-by")))
            except httpx.HTTPError as exc:
                outcomes.append(Outcome(sent, time.monotonic(), type(exc).__name__, None))

        tasks, start, i = [], time.monotonic(), 0
        while (now := time.monotonic()) - start < duration_s:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate_hz - now))
        await asyncio.gather(*tasks)
    return sorted(outcomes, key=lambda o: o.sent_at)


@dataclass
class Summary:
    sent: int
    failed: int
    longest_gap_s: float
    longest_gap_down_s: float  # among gaps that end while panda is down
    p99_during_failover_ms: float
    back_on_panda_s: float | None  # after panda's return; None: never
    failures: dict[str, int]
    failed_at_s: list[float]  # when each failed request was sent, relative to the kill
    down_s: float  # how long panda stayed dead (inf: it did not come back)

    def row(self, label: str) -> str:
        back = "never" if self.back_on_panda_s is None else f"{self.back_on_panda_s:.1f} s"
        while_down = sum(1 for t in self.failed_at_s if 0 <= t < self.down_s)
        return (f"| {label} | {self.sent} | {self.failed} ({while_down} while panda was down, "
                f"{self.failed - while_down} after) | {self.longest_gap_down_s:.2f} s "
                f"| {self.longest_gap_s:.2f} s | {self.p99_during_failover_ms:.0f} ms | {back} |")


def summarize(outcomes: list[Outcome], killed_at: float, back_at: float) -> Summary:
    done = sorted(o.done_at for o in outcomes if o.ok)
    gaps = [(b - a, b) for a, b in zip(done, done[1:])]
    window = sorted(o.done_at - o.sent_at for o in outcomes if killed_at <= o.sent_at < back_at)
    p99 = window[min(len(window) - 1, int(0.99 * len(window)))] if window else 0.0
    returned = [o.done_at - back_at for o in outcomes
                if o.ok and o.host == "panda" and o.sent_at >= back_at]
    failures: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            failures[str(o.status)] = failures.get(str(o.status), 0) + 1
    return Summary(len(outcomes), sum(failures.values()), max((g for g, _ in gaps), default=0.0),
                   max((g for g, end in gaps if killed_at <= end < back_at), default=0.0), p99 * 1e3,
                   min(returned) if returned else None, failures,
                   [round(o.sent_at - killed_at, 2) for o in outcomes if not o.ok],
                   back_at - killed_at)


def paced_load(base_url: str, headers: dict, rate_hz: float, duration_s: float) -> SpawnedLoad:
    """``drive`` in a process of its own."""
    return SpawnedLoad(drive, base_url, headers, rate_hz, duration_s)


def run_scenario(box: sandbox.Sandbox, rate_hz: float, duration_s: float,
                 kill_at_s: float, back_at_s: float | None) -> Summary:
    """Load for ``duration_s``; hard-kill panda at ``kill_at_s``, start it again at
    ``back_at_s`` (None: it stays dead)."""
    load = paced_load(box.base_url, box.headers(), rate_hz, duration_s)
    killed_at = load.wait_until(kill_at_s)
    box.kill("panda")
    if back_at_s is None:
        return summarize(load.join(), killed_at, float("inf"))
    back_at = load.wait_until(back_at_s)
    box.restart("panda")
    return summarize(load.join(), killed_at, back_at)


def native_fallback(args: dict) -> dict:
    """The same TTS with Ray's own label fallback: one replica, panda first, titan second."""
    args = copy.deepcopy(args)
    spec = args["deployments"][TTS_DEPLOYMENT]
    spec.update(num_replicas=1, routing="default", hosts=["panda", "titan"])
    spec.pop("max_replicas_per_node", None)
    return args


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--rate", type=float, default=12)
    a = parser.parse_args()
    kill_at, back_at = a.duration / 4, a.duration / 2
    results = {}
    for label, args in (("this project: replica per node + PreferredHostRouter + hedging + retry",
                         sandbox.serve_args()),
                        ("Ray's label fallback: one replica, label_selector panda + "
                         "fallback_strategy titan (same gateway retry)",
                         native_fallback(sandbox.serve_args()))):
        box = sandbox.start("chaos-token", args, pin_cores=True)
        try:
            results[label] = run_scenario(box, a.rate, a.duration, kill_at, back_at)
        finally:
            box.stop()
    lines = [
        "## TTS failover (panda hard-killed under load)",
        "",
        header(f"python -m bench.failover --duration {a.duration:g} --rate {a.rate:g}"),
        f"{a.rate:g} requests/s to `/v1/audio/speech` ({TTS_DEPLOYMENT}, one short sentence each, "
        f"10 s client timeout) for {a.duration:g} s; panda hard-killed (SIGKILL to its raylet and "
        f"workers) at {kill_at:.0f} s and started again at {back_at:.0f} s. Each node's processes "
        "are pinned to half of this machine's cores, as on two machines: panda starting up takes "
        "no CPU from titan. The load generator runs in a process of its own.",
        "",
        "| placement | sent | failed | longest gap while panda is down | longest gap, whole run "
        "| p99 while panda is down | back on panda |",
        "|---|---|---|---|---|---|---|",
        *(s.row(label) for label, s in results.items()),
        "",
        *(f"- {label}: failures by kind {s.failures or 'none'}" for label, s in results.items()),
    ]
    publish("failover", lines)


if __name__ == "__main__":
    main()
