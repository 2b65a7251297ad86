"""Time to first audio of a voice turn: served (/v1/voice/turn) vs the same stages in-process.

    python -m bench.voice [--runs 5]

A 5 s espeak-ng question, Whisper base (CPU), a fast fake LLM (tests/fakes:
no model, so the figure is the cluster's own), Piper for the answer. In-process
runs STT, the LLM stream up to its first sentence, and that sentence's
synthesis, back to back in this process; served is the time until the first
audio frame arrives over HTTP.
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

from bench.report import header, publish
from bench.speech import five_second_clip
from cluster import sandbox
from deployments.piper import PiperEngine
from deployments.settings import LLMSettings, Settings
from deployments.stt import WhisperEngine
from deployments.text import tts_sentences
from graphs.llm import ChatLLM
from graphs.voice import SentenceBuffer
from tests.fakes.llm_server import FakeLLM

TOKEN = "bench-token"


def in_process(runs: int, wav: bytes, llm_url: str) -> list[float]:
    s = Settings()
    whisper = WhisperEngine(s.speech.whisper, "cpu", data_dir=Path(tempfile.mkdtemp()))
    whisper.load()
    piper = PiperEngine(s.speech.piper_voice)
    piper.load()
    llm = ChatLLM(LLMSettings(url=llm_url, model="fast"))

    async def first_sentence(text: str) -> str:
        buffer = SentenceBuffer()
        async for piece in llm.stream([{"role": "user", "content": text}]):
            if done := buffer.feed(piece):
                return done[0]
        return buffer.flush()[0]

    times = []
    for i in range(runs + 1):  # the first is a warm-up
        start = time.perf_counter()
        heard = whisper.transcribe(whisper.decode(wav))
        sentence = asyncio.run(first_sentence(heard.text))
        piper.synthesize(tts_sentences(sentence)[0], sample_rate=16_000)
        if i:
            times.append(time.perf_counter() - start)
    return times


def served(runs: int, wav: bytes, box: sandbox.Sandbox) -> list[float]:
    times = []
    with httpx.Client(base_url=box.base_url, headers=box.headers(), timeout=120) as client:
        for i in range(runs + 1):
            start = time.perf_counter()
            with client.stream("POST", "/v1/voice/turn",
                               data={"engine": "piper", "output_sample_rate": "16000"},
                               files={"file": ("q.wav", wav, "audio/wav")}) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    if line and json.loads(line)["type"] == "audio":
                        if i:
                            times.append(time.perf_counter() - start)
                        break
    return times


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.0f} ms (min {min(values) * 1e3:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    wav = five_second_clip()
    with FakeLLM() as llm:
        local = in_process(runs, wav, llm.url)
        os.environ["SERVE_LLM__URL"] = llm.url
        box = sandbox.start(TOKEN)
        try:
            remote = served(runs, wav, box)
        finally:
            box.stop()
    lines = [
        "## Voice turn: time to first audio",
        "",
        header(f"python -m bench.voice --runs {runs}"),
        "A 5 s espeak-ng question at 16 kHz; Whisper base (faster-whisper int8, CPU); a fast fake "
        "LLM (no model: the figure is the cluster's own); Piper speaks the first sentence at 16 kHz. "
        f"Median of {runs} after a warm-up.",
        "",
        "| path | time to first audio |",
        "|---|---|",
        f"| in-process (STT, LLM to its first sentence, synthesis, back to back) | {ms(local)} |",
        f"| served (`POST /v1/voice/turn` until the first audio frame) | {ms(remote)} |",
        "",
        f"Served / in-process: {statistics.median(remote) / statistics.median(local):.2f}x. "
        "No GPU was lent to this work, so there are no GPU figures.",
    ]
    publish("voice", lines)


if __name__ == "__main__":
    main()
