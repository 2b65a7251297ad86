"""Speech benchmark: STT latency/RTF on a 5 s clip, TTS time to first audio/RTF, served vs in-process.

    python -m bench.speech [--runs 5] [--url URL --token TOKEN]

In-process runs the engines directly (no Ray). Served goes over HTTP through
the gateway: against ``--url`` if given, else a fresh sandbox cluster
(cluster.sandbox, as the integration tests use, serving serve_config.yaml).
Writes its section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
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


def five_second_clip() -> bytes:
    """espeak-ng speech at 16 kHz, padded with silence (or cut) to exactly 5 s, as WAV."""
    clip = audio.decode(espeak_wav(STT_TEXT, 16_000))
    n = int(CLIP_SECONDS * clip.rate)
    samples = np.zeros(n, np.float32)
    samples[: min(n, len(clip.samples))] = clip.samples[:n]
    return audio.encode(audio.to_int16(samples), clip.rate, "wav")


def summary(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f})"


def rtf(seconds: list[float], audio_seconds: list[float]) -> str:
    return f"{statistics.median(s / a for s, a in zip(seconds, audio_seconds)):.2f}"


def in_process(runs: int, wav: bytes) -> list[tuple]:
    from deployments.kokoro import KokoroEngine
    from deployments.piper import PiperEngine
    from deployments.settings import Settings
    from deployments.stt import WhisperEngine

    s = Settings()
    rows = []
    whisper = WhisperEngine(s.speech.whisper, "cpu", data_dir=Path(tempfile.mkdtemp()))
    with thread_budget("WhisperSTT"):
        whisper.load()
    whisper.transcribe(whisper.decode(wav))  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        whisper.transcribe(whisper.decode(wav))
        times.append(time.perf_counter() - t)
    rows.append(("STT whisper base, 5 s clip", "in-process", summary(times), "-",
                 rtf(times, [CLIP_SECONDS] * runs)))
    silence = audio.Audio(np.zeros(int(SILENCE_SECONDS * 16_000), np.float32), 16_000)
    times = []
    for _ in range(runs):  # VAD finds no speech: Whisper is not run at all
        t = time.perf_counter()
        assert whisper.transcribe(silence).text == ""
        times.append(time.perf_counter() - t)
    rows.append((f"STT whisper base, {SILENCE_SECONDS / 60:.0f} min of silence", "in-process",
                 summary(times), "-", rtf(times, [SILENCE_SECONDS] * runs)))
    engines = {"kokoro": KokoroEngine(s.speech.kokoro, "cpu"), "piper": PiperEngine(s.speech.piper_voice)}
    for name, engine in engines.items():
        with thread_budget(TTS_MODELS[name][0]):
            engine.load()
        engine.synthesize("Warm up.")
        first, total, lengths = [], [], []
        for _ in range(runs):
            t = time.perf_counter()
            chunks = []
            for chunk in (engine.synthesize(s) for s in tts_sentences(TTS_TEXT)):
                if not chunks:
                    first.append(time.perf_counter() - t)
                chunks.append(chunk)
            total.append(time.perf_counter() - t)
            lengths.append(sum(len(c) for c in chunks) / engine.sample_rate)
        rows.append((f"TTS {name}, 3 sentences", "in-process", summary(total), summary(first),
                     rtf(total, lengths)))
    return rows


def served(runs: int, wav: bytes, url: str, token: str) -> list[tuple]:
    rows = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300) as c:
        def transcribe():
            r = c.post("/v1/audio/transcriptions", files={"file": ("clip.wav", wav)})
            r.raise_for_status()

        transcribe()  # warm-up
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            transcribe()
            times.append(time.perf_counter() - t)
        rows.append(("STT whisper base, 5 s clip", "served (HTTP)", summary(times), "-",
                     rtf(times, [CLIP_SECONDS] * runs)))
        for model, (_, voice) in TTS_MODELS.items():
            body = {"model": model, "voice": voice, "response_format": "pcm"}
            c.post("/v1/audio/speech", json={**body, "input": "Warm up."}).raise_for_status()
            first, total, lengths = [], [], []
            for _ in range(runs):
                t = time.perf_counter()
                size = 0
                with c.stream("POST", "/v1/audio/speech", json={**body, "input": TTS_TEXT}) as r:
                    r.raise_for_status()
                    rate = int(r.headers["X-Sample-Rate"])
                    for chunk in r.iter_raw():
                        if not size:
                            first.append(time.perf_counter() - t)
                        size += len(chunk)
                total.append(time.perf_counter() - t)
                lengths.append(size / 2 / rate)
            rows.append((f"TTS {model}, 3 sentences", "served (HTTP)", summary(total), summary(first),
                         rtf(total, lengths)))
    return rows


def ratios(rows: list[tuple]) -> list[str]:
    """Served over in-process: STT latency (target 1.05), TTS first sentence (target 1.1)."""
    def ms(cell: str) -> float:
        return float(cell.split(" ms")[0])

    by = {(what, path.split(" ")[0]): (latency, first) for what, path, latency, first, _ in rows}
    out = []
    for what, column, target in (("STT whisper base, 5 s clip", 0, 1.05),
                                 *((f"TTS {m}, 3 sentences", 1, 1.1) for m in TTS_MODELS)):
        served, local = ms(by[(what, "served")][column]), ms(by[(what, "in-process")][column])
        label = "latency" if column == 0 else "time to first audio (first sentence)"
        out.append(f"- {what}, {label}: {served / local:.2f}x (target <= {target})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", help="a running cluster's base URL (default: start a sandbox)")
    parser.add_argument("--token", default=os.environ.get("SERVE_AUTH__TOKEN", ""))
    args = parser.parse_args(argv)
    wav = five_second_clip()
    rows = in_process(args.runs, wav)
    if args.url:
        rows += served(args.runs, wav, args.url, args.token)
    else:
        # The sandbox the integration tests use, so the benchmark serves what they test.
        box = sandbox.start("bench-token")
        try:
            rows += served(args.runs, wav, box.base_url, box.token)
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
        "is the first sentence's bytes arriving (served) or the first chunk yielded "
        f"(in-process). Median of {args.runs} (the minimum in parentheses), after one warm-up each.",
        "",
        "| what | path | latency | time to first audio | RTF |",
        "|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "Both sides compute with the replica's thread budget (its `num_cpus` in "
        "serve_config.yaml: 1 thread for Whisper, Kokoro and Piper; the in-process engines "
        "are loaded with `SERVE_CPU_THREADS` set to it). Ratios from this run (medians):",
        "",
        *ratios(rows),
    ]
    publish("speech", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
