"""Test speech: espeak-ng clips and word error rate (shared by unit and integration tests)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SENTENCES = [
    "The weather today is sunny with a light breeze.",
    "Please remind me to call my sister tomorrow morning.",
    "The train to the city leaves from platform two.",
    "I would like a cup of coffee with milk.",
    "Turn off the lights in the kitchen when you leave.",
]


def espeak_wav(text: str, rate: int | None = None, pad_s: tuple[float, float] = (0.0, 0.0)) -> bytes:
    """espeak-ng speech as 16-bit mono WAV, resampled with sox to ``rate`` when given,
    with ``pad_s`` seconds of silence before and after.

    sox runs with -D: its default dither is random noise, which made the same
    test clip transcribe differently from run to run.
    """
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng sox)")
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
        if rate is None and not any(pad_s):
            return raw.read_bytes()
        if shutil.which("sox") is None:
            pytest.skip("sox is not installed (apt-get install sox)")
        resample = ["-r", str(rate)] if rate else []
        pad = ["pad", str(pad_s[0]), str(pad_s[1])] if any(pad_s) else []
        subprocess.run(["sox", "-D", str(raw), *resample, "-c", "1", "-b", "16", str(out), *pad],
                       check=True)
        return out.read_bytes()


NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}


def normalize(text: str) -> list[str]:
    """Lower case, punctuation dropped, hyphens split, small numbers as digits
    (Whisper writes "platform 2" for "platform two")."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [NUMBERS.get(w, w) for w in words]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))
