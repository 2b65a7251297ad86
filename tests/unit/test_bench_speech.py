"""bench.speech's ratios: medians, and each served call over the in-process call paired with it."""

from __future__ import annotations

from bench.speech import BEFORE, PAIRED, SERVED, STT, TTS_ROWS, Timing, ratios


def timings(latencies: list[float], firsts: list[float] | None = None) -> list[Timing]:
    firsts = firsts or [None] * len(latencies)
    return [Timing(latency, 5.0, first) for latency, first in zip(latencies, firsts)]


def test_each_pair_is_timed_at_one_speed_of_the_machine():
    # The machine runs 2x slower for the second half: each side's latencies spread 2x,
    # but each pair meets one speed, and served is 1.10x its in-process partner in all.
    local = [2.0, 2.0, 2.0, 4.0, 4.0, 4.0]
    served = [x * 1.10 for x in local]
    samples = {(STT, BEFORE): timings([2.0] * 6), (STT, PAIRED): timings(local),
               (STT, SERVED): timings(served)}
    for what in TTS_ROWS.values():
        samples |= {(what, path): timings([1.0] * 6, [0.1] * 6)
                    for path in (BEFORE, PAIRED, SERVED)}

    stt, *tts = ratios(samples)

    assert stt.startswith(f"- {STT}, latency: 1.10x (target <= 1.05)")
    assert "pair by pair: median 1.10x, middle half 1.10-1.10x" in stt
    assert stt.endswith("over the engine before the cluster started: 1.65x")
    assert all("time to first audio (first sentence): 1.00x" in line for line in tts)


def test_the_middle_half_shows_the_spread_of_the_pairs():
    local = [1.0] * 8
    served = [0.9, 1.0, 1.0, 1.1, 1.1, 1.2, 1.2, 1.3]
    samples = {(STT, path): timings(values)
               for path, values in ((BEFORE, local), (PAIRED, local), (SERVED, served))}
    for what in TTS_ROWS.values():
        samples |= {(what, path): timings([1.0] * 8, [0.1] * 8)
                    for path in (BEFORE, PAIRED, SERVED)}

    stt = ratios(samples)[0]

    assert "pair by pair: median 1.10x, middle half 1.00-1.20x" in stt
