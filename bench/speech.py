"""Speech benchmark: STT latency/RTF on a 5 s clip, TTS time to first audio/RTF, served vs in-process.

    python -m bench.speech [--runs 10] [--url URL --token TOKEN]

In-process runs the engines directly (no Ray), loaded with each replica's thread
budget. Served goes over HTTP through the gateway: against ``--url`` if given,
else a fresh sandbox cluster (cluster.sandbox, as the integration tests use,
serving serve_config.yaml). The engines are timed once before the cluster starts,
then in pairs with the served calls, one in-process call and one served request
in turn: this machine's speed changes by up to 1.6x for seconds at a time (Piper's
first sentence: 54 or 88 ms, blocks of a few seconds, on an idle machine), so the
ratios compare calls made under the same conditions. Writes its section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.report import header, publish, thread_budget  # noqa: E402
from cluster import sandbox  # noqa: E402
from deployments import audio  # noqa: E402
from deployments.text import tts_sentences  # noqa: E402
from tests.speechkit import espeak_wav  # noqa: E402

CLIP_SECONDS = 5.0
SILENCE_SECONDS = 600.0  # issue 12: ten silent minutes took 67 s and came back as words
STT_TEXT = "Please remind me to call my sister tomorrow morning about the dinner."
TTS_TEXT = ("Good morning. It is seven o'clock and the weather is sunny. "
            "You have two meetings today, the first one at ten.")
TTS_MODELS = {"kokoro": ("KokoroTTS", "jf_alpha"), "piper": ("PiperTTS", "en_US-joe-medium")}
STT = "STT whisper base, 5 s clip"
SILENCE = f"STT whisper base, {SILENCE_SECONDS / 60:.0f} min of silence"
TTS_ROWS = {m: f"TTS {m}, 3 sentences" for m in TTS_MODELS}
BEFORE, PAIRED, SERVED = "in-process, before the cluster", "in-process, paired", "served (HTTP)"


def five_second_clip() -> bytes:
    """espeak-ng speech at 16 kHz, padded with silence (or cut) to exactly 5 s, as WAV."""
    clip = audio.decode(espeak_wav(STT_TEXT, 16_000))
    n = int(CLIP_SECONDS * clip.rate)
    samples = np.zeros(n, np.float32)
    samples[: min(n, len(clip.samples))] = clip.samples[:n]
    return audio.encode(audio.to_int16(samples), clip.rate, "wav")


class Timing:
    """One call: its latency, first audio (TTS) and seconds of audio in or out (all s)."""

    def __init__(self, latency: float, audio_s: float, first: float | None = None):
        self.latency, self.audio_s, self.first = latency, audio_s, first


class Engines:
    """The engines in this process, each on its replica's thread budget."""

    def __init__(self) -> None:
        from deployments.kokoro import KokoroEngine
        from deployments.piper import PiperEngine
        from deployments.settings import Settings
        from deployments.stt import WhisperEngine

        s = Settings()
        self.whisper = WhisperEngine(s.speech.whisper, "cpu", data_dir=Path(tempfile.mkdtemp()))
        self.tts = {"kokoro": KokoroEngine(s.speech.kokoro, "cpu"),
                    "piper": PiperEngine(s.speech.piper_voice)}
        with thread_budget("WhisperSTT"):
            self.whisper.load()
        for name, engine in self.tts.items():
            with thread_budget(TTS_MODELS[name][0]):
                engine.load()

    def transcribe(self, wav: bytes) -> Timing:
        t = time.perf_counter()
        self.whisper.transcribe(self.whisper.decode(wav))
        return Timing(time.perf_counter() - t, CLIP_SECONDS)

    def silence(self) -> Timing:
        """Ten minutes of zeros: voice activity detection finds no speech, Whisper never runs."""
        silent = audio.Audio(np.zeros(int(SILENCE_SECONDS * 16_000), np.float32), 16_000)
        t = time.perf_counter()
        assert self.whisper.transcribe(silent).text == ""
        return Timing(time.perf_counter() - t, SILENCE_SECONDS)

    def speak(self, name: str) -> Timing:
        engine, first, samples = self.tts[name], None, 0
        t = time.perf_counter()
        for sentence in tts_sentences(TTS_TEXT):
            samples += len(engine.synthesize(sentence))
            first = first or time.perf_counter() - t
        return Timing(time.perf_counter() - t, samples / engine.sample_rate, first)


class Served:
    """The same calls over HTTP (aiohttp, as bench.embeddings' load generator)."""

    def __init__(self, http: aiohttp.ClientSession, wav: bytes):
        self.http, self.wav = http, wav

    async def transcribe(self) -> Timing:
        form = aiohttp.FormData()
        form.add_field("file", self.wav, filename="clip.wav", content_type="audio/wav")
        t = time.perf_counter()
        async with self.http.post("/v1/audio/transcriptions", data=form) as r:
            assert r.status == 200, await r.text()
            await r.read()
        return Timing(time.perf_counter() - t, CLIP_SECONDS)

    async def speak(self, model: str) -> Timing:
        body = {"model": model, "voice": TTS_MODELS[model][1], "response_format": "pcm",
                "input": TTS_TEXT}
        first, size = None, 0
        t = time.perf_counter()
        async with self.http.post("/v1/audio/speech", json=body) as r:
            assert r.status == 200, await r.text()
            rate = int(r.headers["X-Sample-Rate"])
            async for chunk in r.content.iter_any():
                first = first or time.perf_counter() - t
                size += len(chunk)
        return Timing(time.perf_counter() - t, size / 2 / rate, first)


def alone(engines: Engines, runs: int, wav: bytes) -> dict[tuple[str, str], list[Timing]]:
    """Each engine by itself, before any cluster runs."""
    engines.transcribe(wav)  # warm-up
    out = {(STT, BEFORE): [engines.transcribe(wav) for _ in range(runs)],
           (SILENCE, BEFORE): [engines.silence() for _ in range(runs)]}
    for name, what in TTS_ROWS.items():
        engines.tts[name].synthesize("Warm up.")
        out[(what, BEFORE)] = [engines.speak(name) for _ in range(runs)]
    return out


async def paired(engines: Engines, runs: int, wav: bytes, url: str, token: str
                 ) -> dict[tuple[str, str], list[Timing]]:
    """One in-process call, then the same served, ``runs`` times per row (after a warm-up)."""
    out: dict[tuple[str, str], list[Timing]] = {}
    async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {token}"},
                                     timeout=aiohttp.ClientTimeout(total=300)) as http:
        served = Served(http, wav)
        calls = [(STT, lambda: engines.transcribe(wav), served.transcribe)]
        calls += [(what, lambda m=m: engines.speak(m), lambda m=m: served.speak(m))
                  for m, what in TTS_ROWS.items()]
        for what, local, remote in calls:
            local(), await remote()  # warm-up
            for _ in range(runs):
                out.setdefault((what, PAIRED), []).append(local())
                out.setdefault((what, SERVED), []).append(await remote())
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f})"


def row(what: str, path: str, timings: list[Timing]) -> str:
    first = ms([t.first for t in timings]) if timings[0].first is not None else "-"
    rtf = statistics.median(t.latency / t.audio_s for t in timings)
    return f"| {what} | {path} | {ms([t.latency for t in timings])} | {first} | {rtf:.2f} |"


def ratios(samples: dict[tuple[str, str], list[Timing]]) -> list[str]:
    """Served over in-process: STT latency (target 1.05), TTS first sentence (target 1.1),
    against the paired calls, and against the engine alone before the cluster."""
    def values(what: str, path: str, first: bool) -> list[float]:
        return [t.first if first else t.latency for t in samples[(what, path)]]

    def median(what: str, path: str, first: bool) -> float:
        return statistics.median(values(what, path, first))

    def per_pair(what: str, first: bool) -> str:
        """The ratio of each served call to the in-process call just before it: the
        machine's speed cancels out of each pair, so its spread is the path's and the model's."""
        pairs = [s / p for p, s in zip(values(what, PAIRED, first), values(what, SERVED, first))]
        low, mid, high = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else pairs * 3
        return f"median {mid:.2f}x, middle half {low:.2f}-{high:.2f}x"

    out = []
    targets = [(STT, False, 1.05), *((what, True, 1.1) for what in TTS_ROWS.values())]
    for what, first, target in targets:
        served = median(what, SERVED, first)
        alone = served / median(what, BEFORE, first)
        label = "time to first audio (first sentence)" if first else "latency"
        out.append(f"- {what}, {label}: {served / median(what, PAIRED, first):.2f}x "
                   f"(target <= {target}); pair by pair: {per_pair(what, first)}; over the "
                   f"engine before the cluster started: {alone:.2f}x")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--url", help="a running cluster's base URL (default: start a sandbox)")
    parser.add_argument("--token", default=os.environ.get("SERVE_AUTH__TOKEN", ""))
    args = parser.parse_args(argv)
    wav = five_second_clip()
    engines = Engines()
    samples = alone(engines, args.runs, wav)
    if args.url:
        samples |= asyncio.run(paired(engines, args.runs, wav, args.url, args.token))
    else:
        # The sandbox the integration tests use, so the benchmark serves what they test.
        box = sandbox.start("bench-token")
        try:
            samples |= asyncio.run(paired(engines, args.runs, wav, box.base_url, box.token))
        finally:
            box.stop()
    command = f"python -m bench.speech --runs {args.runs}" + (f" --url {args.url}" if args.url else "")
    lines = [
        "## Speech",
        "",
        header(command),
        "STT: a 5.0 s espeak-ng clip at 16 kHz, Whisper base (faster-whisper int8, greedy), "
        "and 10 minutes of digital silence (voice activity detection finds no speech). "
        "TTS: three sentences, `response_format=pcm` at the model's rate; time to first audio "
        "is the first sentence's bytes arriving (served, aiohttp) or the first sentence "
        f"synthesized (in-process). Median of {args.runs} (the minimum in parentheses), after "
        "one warm-up each. The engines run in this process alone before the cluster starts, "
        "then paired with the served calls: one in-process call, then one served request, in "
        "turn, so that both sides of a ratio meet the same machine (its speed changes by up "
        "to 1.6x for seconds at a time).",
        "",
        "| what | path | latency | time to first audio | RTF |",
        "|---|---|---|---|---|",
        *(row(what, path, samples[(what, path)]) for what in (STT, SILENCE, *TTS_ROWS.values())
          for path in (BEFORE, PAIRED, SERVED) if (what, path) in samples),
        "",
        "Both sides compute with the replica's thread budget (its `num_cpus` in "
        "serve_config.yaml: 1 thread for Whisper, Kokoro and Piper; the in-process engines "
        "are loaded with `SERVE_CPU_THREADS` set to it). Ratios from this run: the served "
        "median over the paired in-process median, then the ratio of each pair's served call "
        "to its in-process call (the median and the middle half of those ratios):",
        "",
        *ratios(samples),
    ]
    publish("speech", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
