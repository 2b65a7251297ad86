"""The test corpus: sentences written for these tests (tests/data/corpus.txt)."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "corpus.txt"


def sentences() -> list[str]:
    lines = CORPUS.read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def documents() -> list[dict]:
    return [
        {"id": f"s{i:03d}", "text": text, "metadata": {"line": i}, "kind": "document"}
        for i, text in enumerate(sentences())
    ]


QUERIES = [
    "when is the dentist appointment",
    "problems with the car",
    "travel plans abroad",
    "something is leaking in the house",
    "music lessons for the children",
]
