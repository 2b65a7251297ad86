"""ChatLLM's generation speed: served (/v1/chat/completions, streamed) vs the same engine in-process.

    python -m bench.llm [--runs 5] [--max-tokens 128]

The embedded SmolLM2-135M-Instruct, greedy (temperature 0), so both sides
generate the same tokens for the same prompt. Thread budget: both sides run
generation on the same number of torch threads, ChatLLM's ``num_cpus`` in
serve_config.yaml (the replica turns its Ray-assigned CPUs into torch threads;
in-process sets the same number with SERVE_LLM__THREADS semantics). The served
cluster runs only Gateway and ChatLLM, so no other model competes for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import openai

from bench.report import header, publish, replica_threads
from cluster import sandbox
from deployments.llm import ChatEngine, ChatRequest
from deployments.settings import LLMSettings

TOKEN = "bench-token"
PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "Tell me a long story about a lighthouse keeper and the sea."}]


def chat_threads() -> int:
    """The torch threads a ChatLLM replica gets: its num_cpus in serve_config.yaml, rounded up."""
    return replica_threads("ChatLLM")


class Sample:
    """One completion: time to first token and tokens per second after it."""

    def __init__(self, first_s: float, total_s: float, tokens: int):
        self.first_s, self.tokens = first_s, tokens
        self.rate = (tokens - 1) / (total_s - first_s) if tokens > 1 and total_s > first_s else 0.0


def in_process(runs: int, max_tokens: int, threads: int) -> list[Sample]:
    engine = ChatEngine(LLMSettings(threads=threads), "cpu")
    engine.load()
    request = ChatRequest(PROMPT, max_tokens, 0.0)

    async def one() -> Sample:
        start, first = time.perf_counter(), None
        async for chunk in engine.stream(request):
            if chunk.text and first is None:
                first = time.perf_counter() - start
            if chunk.finish_reason:
                return Sample(first or 0.0, time.perf_counter() - start, chunk.completion_tokens)

    async def all_runs() -> list[Sample]:
        return [await one() for _ in range(runs + 1)][1:]  # the first is a warm-up

    return asyncio.run(all_runs())


def served(runs: int, max_tokens: int, box: sandbox.Sandbox) -> list[Sample]:
    client = openai.OpenAI(base_url=f"{box.base_url}/v1", api_key=box.token, timeout=600)
    samples = []
    for i in range(runs + 1):
        start, first, tokens = time.perf_counter(), None, 0
        for chunk in client.chat.completions.create(
                messages=PROMPT, model="SmolLM2-135M-Instruct", max_tokens=max_tokens,
                temperature=0, stream=True, stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].delta.content and first is None:
                first = time.perf_counter() - start
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        if i:
            samples.append(Sample(first or 0.0, time.perf_counter() - start, tokens))
    return samples


def row(label: str, samples: list[Sample]) -> str:
    return (f"| {label} | {statistics.median(s.first_s for s in samples) * 1e3:.0f} "
            f"| {statistics.median(s.rate for s in samples):.1f} "
            f"| {statistics.median(s.tokens for s in samples):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    os.environ.pop("SERVE_LLM__URL", None)  # the embedded model on both sides
    threads = chat_threads()
    local = in_process(args.runs, args.max_tokens, threads)
    full = sandbox.serve_args()
    only = {name: full["deployments"][name] for name in ("Gateway", "ChatLLM")}
    box = sandbox.start(TOKEN, {**full, "deployments": only})
    try:
        remote = served(args.runs, args.max_tokens, box)
    finally:
        box.stop()
    ratio = statistics.median(s.rate for s in remote) / statistics.median(s.rate for s in local)
    publish("llm", [
        "## ChatLLM: tokens per second",
        "",
        header(f"python -m bench.llm --runs {args.runs} --max-tokens {args.max_tokens}"),
        f"SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32 by transformers), greedy, up to "
        f"{args.max_tokens} tokens, on {threads} torch thread(s) on both sides (ChatLLM's "
        f"num_cpus). Median of {args.runs} after a warm-up; tokens/s counts the tokens after the "
        "first over the time after it.",
        "",
        "| path | first token (ms) | tokens/s | tokens |",
        "|---|---|---|---|",
        row("in-process (`ChatEngine.stream`)", local),
        row("served (`POST /v1/chat/completions`, streamed, openai client)", remote),
        "",
        f"Served / in-process tokens/s: {ratio:.2f}x.",
    ])


if __name__ == "__main__":
    main()
