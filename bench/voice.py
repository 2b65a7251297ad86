"""Time to first audio of a voice turn with the real embedded LLM: served vs the same stages in-process.

    python -m bench.voice [--runs 5]

A 5 s espeak-ng question; Whisper base (faster-whisper int8, CPU); SmolLM2-135M
(ChatLLM's embedded model) up to the end of its first sentence; Piper speaks
that sentence at 16 kHz. In-process runs the same three engines back to back in
this process; served is the time until the first audio frame of
``POST /v1/voice/turn`` arrives.

Thread budget, matched on both sides: every engine computes on its replica's
``num_cpus`` threads (serve_config.yaml; a replica derives its threads from
the CPUs Ray assigned it, the in-process engines are loaded with the same
number, ``bench.report.thread_budget``). Both sides
decode greedily (temperature 0) with the voice graph's system prompt, so the
LLM writes the same first sentence. The served cluster runs only what a turn
needs (Gateway, WhisperSTT, ChatLLM, PiperTTS, VoiceGraph).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.llm import chat_threads
from bench.report import header, publish, thread_budget
from bench.speech import five_second_clip
from cluster import sandbox
from deployments.llm import ChatEngine, ChatRequest
from deployments.piper import PiperEngine
from deployments.settings import LLMSettings, Settings
from deployments.stt import WhisperEngine
from deployments.text import tts_sentences
from graphs.voice import DEFAULT_SYSTEM_PROMPT, SentenceBuffer

TOKEN = "bench-token"
TURN_DEPLOYMENTS = ("Gateway", "WhisperSTT", "ChatLLM", "PiperTTS", "VoiceGraph")


def in_process(runs: int, wav: bytes, threads: int) -> list[dict[str, float]]:
    """Per turn: when STT, the LLM's first sentence and its synthesis were done, in
    seconds since the turn started (the served side's ``timings_ms`` stages)."""
    s = Settings()
    whisper = WhisperEngine(s.speech.whisper, "cpu", data_dir=Path(tempfile.mkdtemp()))
    piper = PiperEngine(s.speech.piper_voice)
    with thread_budget("WhisperSTT"):
        whisper.load()
    with thread_budget("PiperTTS"):
        piper.load()
    llm = ChatEngine(LLMSettings(threads=threads), "cpu")
    llm.load()

    async def first_sentence(text: str) -> str:
        buffer = SentenceBuffer()
        request = ChatRequest([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                               {"role": "user", "content": text}], s.llm.max_tokens, 0.0)
        async for chunk in llm.stream(request):
            if done := buffer.feed(chunk.text):
                return done[0]
        return buffer.flush()[0]

    turns = []
    for i in range(runs + 1):  # the first is a warm-up
        start, marks = time.perf_counter(), {}
        heard = whisper.transcribe(whisper.decode(wav))
        marks["stt"] = time.perf_counter() - start
        sentence = asyncio.run(first_sentence(heard.text))
        marks["llm_first_sentence"] = time.perf_counter() - start
        piper.synthesize(tts_sentences(sentence)[0], sample_rate=16_000)
        marks["first_audio"] = time.perf_counter() - start
        if i:
            turns.append(marks)
    return turns


def served(runs: int, wav: bytes, box: sandbox.Sandbox) -> list[dict[str, float]]:
    """Per turn: the client's first audio frame (``client``) and the VoiceGraph's own
    stage marks from the ``done`` frame, in seconds since each started."""
    turns = []
    with httpx.Client(base_url=box.base_url, headers=box.headers(), timeout=120) as client:
        for i in range(runs + 1):
            start, first = time.perf_counter(), None
            with client.stream("POST", "/v1/voice/turn",
                               data={"engine": "piper", "output_sample_rate": "16000"},
                               files={"file": ("q.wav", wav, "audio/wav")}) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    frame = json.loads(line) if line else {}
                    if frame.get("type") == "audio" and first is None:
                        first = time.perf_counter() - start
                    if frame.get("type") == "done" and i:
                        turns.append({"client": first, **{stage: v / 1e3 for stage, v
                                                          in frame["timings_ms"].items()}})
    return turns


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.0f} ms (min {min(values) * 1e3:.0f})"


def median_ms(turns: list[dict[str, float]], stage: str, since: str | None = None) -> float:
    """Median over turns of ``stage`` (minus ``since``), in ms."""
    return statistics.median(t[stage] - (t[since] if since else 0.0) for t in turns) * 1e3


def stage_rows(local: list[dict[str, float]], remote: list[dict[str, float]]) -> list[str]:
    """Where a turn's time to first audio goes, stage by stage, on both sides."""
    rows = [("STT (served: the VoiceGraph's call to WhisperSTT)", "stt", None),
            ("LLM to its first sentence", "llm_first_sentence", "stt"),
            ("the first sentence spoken (served: the TTS call, its hop and the frame)",
             "first_audio", "llm_first_sentence")]
    lines = ["| stage | in-process | served | served - in-process |", "|---|---|---|---|"]
    for label, stage, since in rows:
        a, b = median_ms(local, stage, since), median_ms(remote, stage, since)
        lines.append(f"| {label} | {a:.0f} ms | {b:.0f} ms | {b - a:+.0f} ms |")
    edge = median_ms(remote, "client", "first_audio")
    lines.append(f"| the edge (upload, Gateway, hop to the VoiceGraph, the first frame back) "
                 f"| - | {edge:.0f} ms | {edge:+.0f} ms |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    wav = five_second_clip()
    os.environ.pop("SERVE_LLM__URL", None)  # the embedded model on both sides
    os.environ["SERVE_LLM__TEMPERATURE"] = "0"
    threads = chat_threads()
    local = in_process(runs, wav, threads)
    full = sandbox.serve_args()
    box = sandbox.start(TOKEN, {**full, "deployments": {
        name: full["deployments"][name] for name in TURN_DEPLOYMENTS}})
    try:
        remote = served(runs, wav, box)
    finally:
        box.stop()
    first = [t["first_audio"] for t in local]
    client = [t["client"] for t in remote]
    lines = [
        "## Voice turn: time to first audio",
        "",
        header(f"python -m bench.voice --runs {runs}"),
        "A 5 s espeak-ng question at 16 kHz; Whisper base (faster-whisper int8, CPU); the embedded "
        f"SmolLM2-135M (greedy, {threads} torch thread(s) on both sides: ChatLLM's num_cpus) up to "
        "its first sentence; Piper speaks that sentence at 16 kHz. Whisper and Piper compute on "
        "their replicas' num_cpus threads on both sides too (1 each). The served path is HTTP "
        f"straight to titan's Gateway (direct ingress). Median of {runs} after a warm-up.",
        "",
        "| path | time to first audio |",
        "|---|---|",
        f"| in-process (STT, LLM to its first sentence, synthesis, back to back) | {ms(first)} |",
        f"| served (`POST /v1/voice/turn` until the first audio frame) | {ms(client)} |",
        "",
        f"Served / in-process: {statistics.median(client) / statistics.median(first):.2f}x. "
        "(target <= 1.15). CPU only: the GPU engines' figures are in the GPU smoke section.",
        "",
        "Where the time goes (medians of each stage; served stages from the VoiceGraph's "
        "`timings_ms`, the edge is the client's first audio minus the VoiceGraph's):",
        "",
        *stage_rows(local, remote),
    ]
    publish("voice", lines)


if __name__ == "__main__":
    main()
