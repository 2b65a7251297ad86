"""Benchmarks (`make bench`); each writes its own section of docs/BENCHMARKS.md."""
