"""Python client and CLI for her-serve (the phone daemon's way in).

    from clients import HerClient
    with HerClient() as c:          # HER_SERVE_URLS, HER_SERVE_TOKEN
        audio = c.tts("Hello")      # raw int16 PCM, like Chatterbox's /v1/tts
"""

from clients.client import AsyncHerClient, HerClient, TTSAudio
from clients.retry import DeadlineExceeded, HerServeError, RetryPolicy

__all__ = [
    "AsyncHerClient",
    "DeadlineExceeded",
    "HerClient",
    "HerServeError",
    "RetryPolicy",
    "TTSAudio",
]
