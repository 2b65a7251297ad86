"""Text going into TTS: validation and sentence splitting, numpy-free.

The gateway validates text with these before it calls a model (so bad text is
a 4xx before any audio is streamed) and splits it into the sentences it asks
the TTS replicas for, one at a time.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass


class SynthesisCancelled(Exception):
    """A TTS engine stopped because its caller cancelled (barge-in); numpy-free so the gateway can catch it."""


@dataclass(frozen=True)
class CancelKey:
    """Who may cancel a synthesis: every sentence of one voice turn or one HTTP request
    carries the same key, so one caller's barge-in never stops another caller's speech.

    ``scope`` says which route started it ("phone": /v1/tts, "speech": /v1/audio/speech,
    "voice": a voice turn); ``id`` is unique per turn or request. In a cancel, ``id``
    None means every synthesis of that scope (the phone's ``POST /cancel``).
    """

    scope: str
    id: str | None = None

    @classmethod
    def new(cls, scope: str) -> "CancelKey":
        return cls(scope, uuid.uuid4().hex)


# A sentence ends at . ! ? (or their CJK forms) followed by space, unless the
# word before is a short abbreviation (Mr. Dr. e.g.).
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"')\]]*\s+")
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Prof|Sr|Jr|vs|etc|e\.g|i\.e)|\b[A-Z])\.$")


# Short enough for Kokoro's 510-phoneme context and for a quick first sentence.
TTS_SENTENCE_CHARS = 300


def tts_sentences(text: str) -> list[str]:
    """The units a TTS replica is asked for, one call each (split here only, on the gateway side)."""
    return split_sentences(text, TTS_SENTENCE_CHARS)


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Sentences in order, none longer than ``max_chars`` (long ones break at commas, then spaces).

    TTS streams one sentence at a time, so the first audio leaves before the
    rest is synthesized; short pieces also keep the models inside their context.
    """
    pieces: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        candidate = text[start : m.start()].strip()
        if _ABBREVIATION.search(candidate):
            continue
        pieces.append(candidate)
        start = m.end()
    pieces.append(text[start:].strip())
    return [part for p in pieces if p for part in _bounded(p, max_chars)]


def _bounded(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    out, current = [], ""
    for word in re.split(r"(?<=[,;:])\s+|\s+", sentence):
        while len(word) > max_chars:  # one unbroken run of characters
            if current:
                out.append(current)
                current = ""
            out.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        out.append(current)
    return out


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str, max_chars: int) -> str:
    """Text a TTS engine can speak, or ValueError.

    Control characters are refused (they mean a client bug); emoji and other
    symbols are dropped, since no voice can say them, and text of nothing but
    symbols is refused.
    """
    if _CONTROL.search(text):
        raise ValueError("text contains control characters")
    if len(text) > max_chars:
        raise ValueError(f"text is {len(text)} characters; the limit is {max_chars}")
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("So", "Cs", "Co", "Cn"))
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        raise ValueError("text is empty")
    if not any(ch.isalnum() for ch in text):
        raise ValueError("text has nothing speakable (no letters or digits)")
    return text
