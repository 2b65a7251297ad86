"""A small OpenAI-compatible chat server that streams a scripted reply.

The requested ``model``, or a ``[fake:<mode>]`` marker in the system prompt
(how a test picks it through the voice graph), chooses the behaviour:
  fast     the reply, a few words per chunk, no delay
  slow     the first sentence at once, then one chunk every ``slow_s``
  hang     accepts the request and never sends a token
  garbage  answers 200 with text that is not a chat stream
  die      sends the first sentence, then drops the connection
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

REPLY = (
    "The train to the city leaves at half past five. "
    "It stops at the airport on the way. "
    "Bring a warm coat because the evening will be cold."
)


MODES = ("fast", "slow", "hang", "garbage", "die")


def _chunk(text: str) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}) + "\n\n"


class FakeLLM:
    def __init__(self, reply: str = REPLY, slow_s: float = 0.5):
        self.reply, self.slow_s = reply, slow_s
        self.requests: list[dict] = []
        self.finished_at: list[float] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "FakeLLM":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

    async def chat(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        system = next((m.get("content", "") for m in body.get("messages", [])
                       if m.get("role") == "system"), "")
        mode = next((m for m in MODES if f"[fake:{m}]" in system), body.get("model", "fast"))
        if mode == "garbage":
            return PlainTextResponse("<html>definitely not a stream</html>")
        words = self.reply.split(" ")
        pieces = [" ".join(words[i : i + 3]) + " " for i in range(0, len(words), 3)]
        first_end = next(i for i, p in enumerate(pieces) if "." in p) + 1

        async def events():
            if mode == "hang":
                await asyncio.sleep(3600)
            for i, piece in enumerate(pieces):
                if mode == "slow" and i >= first_end:
                    await asyncio.sleep(self.slow_s)
                if mode == "die" and i >= first_end:
                    raise RuntimeError("fake LLM dies mid-stream")
                yield _chunk(piece)
            yield "data: [DONE]\n\n"
            self.finished_at.append(time.monotonic())

        return StreamingResponse(events(), media_type="text/event-stream")
