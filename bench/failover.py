"""TTS under a node's death: a paced load, a hard kill, a return, and the figures.

    python -m bench.failover [--duration 60] [--fraction 0.7] [--runs 2]   # also `make chaos`

First it measures one node's capacity: with panda killed, how many requests a
second titan alone serves (each node pinned to its own cores) under a closed
loop of callers. The failover load then runs at ``--fraction`` of that (about
70 %), so the survivor can carry it: the benchmark measures failover, not
overload (above capacity the gateway sheds at once with 503 + Retry-After).
Runs two placements on their own sandbox cluster (titan + panda on this
machine), each with panda hard-killed a quarter of the way in and brought back
at half-way:
  * this project's: one TTS replica per node, PreferredHostRouter preferring
    panda, per-attempt deadline and one retry on the other node;
  * Ray's native label fallback: one replica with label_selector panda and
    fallback_strategy titan and the default router (the gateway's retry on a
    lost replica still applies, so only placement differs).
The chaos tests (tests/chaos) call ``measure_capacity`` and ``run_scenario``
with shorter settings. ``--runs 2`` repeats the whole measurement and publishes
every run, so a result that flips with noise shows.
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


SHORT_SPEECH = ("/v1/audio/speech", [{"model": "piper", "input": s, "voice": "alloy",
                                      "response_format": "pcm"} for s in SENTENCES])


def wait_until_served_by(box: sandbox.Sandbox, host: str, timeout_s: float = 180) -> float:
    """Poll until a request is served on ``host`` again; seconds it took."""
    start = time.monotonic()
    path, bodies = SHORT_SPEECH
    with box.client() as client:
        while time.monotonic() - start < timeout_s:
            try:
                r = client.post(path, json=bodies[0])
                if r.status_code == 200 and r.headers.get("x-served-by") == host:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise TimeoutError(f"no request served on {host} within {timeout_s:.0f} s")


def measure_capacity(box: sandbox.Sandbox, duration_s: float = 20, callers: int = 16) -> float:
    """Requests/s titan alone serves: panda killed, ``callers`` in a closed loop for
    ``duration_s`` (sheds wait Retry-After); panda is started again before it returns."""
    from bench.overload import crowd

    box.kill("panda")
    try:
        outcomes = SpawnedLoad(crowd, box.base_url, box.headers(), callers, duration_s,
                               SHORT_SPEECH).join()
    finally:
        box.restart("panda")
    wait_until_served_by(box, "panda")
    served = sorted(o.done_at for o in outcomes if o.ok)
    # the middle of the run: the first seconds fill the pipeline, the last ones drain it
    middle = [t for t in served if served[0] + 0.2 * duration_s <= t <= served[0] + 0.8 * duration_s]
    return len(middle) / (0.6 * duration_s)


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
    parser.add_argument("--fraction", type=float, default=0.7,
                        help="failover load as a fraction of titan's capacity alone")
    parser.add_argument("--capacity-duration", type=float, default=20)
    parser.add_argument("--runs", type=int, default=1)
    a = parser.parse_args()
    kill_at, back_at = a.duration / 4, a.duration / 2
    placements = (
        ("this project: replica per node + PreferredHostRouter + hedging + retry",
         sandbox.serve_args()),
        ("Ray's label fallback: one replica, label_selector panda + fallback_strategy titan "
         "(same gateway retry)", native_fallback(sandbox.serve_args())),
    )
    lines = [
        "## TTS failover (panda hard-killed under load)",
        "",
        header(f"python -m bench.failover --duration {a.duration:g} --fraction {a.fraction:g} "
               f"--runs {a.runs}"),
        "Each run first measures titan's capacity alone (panda killed, 16 callers in a closed "
        f"loop for {a.capacity_duration:g} s, served requests/s in the middle 60 %), then sends "
        f"{a.fraction:.0%} of it to `/v1/audio/speech` ({TTS_DEPLOYMENT}, one short sentence "
        f"each, 10 s client timeout) for {a.duration:g} s; panda hard-killed (SIGKILL to its "
        f"raylet and workers) at {kill_at:.0f} s and started again at {back_at:.0f} s. Each "
        "node's processes are pinned to half of this machine's cores, as on two machines: "
        "panda starting up takes no CPU from titan. The load generator runs in a process of "
        "its own.",
        "",
        "| run | titan alone | load | placement | sent | failed | longest gap while panda is "
        "down | longest gap, whole run | p99 while panda is down | back on panda |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for run in range(1, a.runs + 1):
        rate = capacity = None
        for label, args in placements:
            box = sandbox.start("chaos-token", args, pin_cores=True)
            try:
                if capacity is None:  # measured once per run, on this project's placement
                    capacity = measure_capacity(box, a.capacity_duration)
                    rate = a.fraction * capacity
                s = run_scenario(box, rate, a.duration, kill_at, back_at)
            finally:
                box.stop()
            lines.append(f"| {run} | {capacity:.1f} req/s | {rate:.1f} req/s " + s.row(label))
            notes.append(f"- run {run}, {label}: failures by kind {s.failures or 'none'}")
    publish("failover", [*lines, "", *notes])


if __name__ == "__main__":
    main()
