"""Fakes for what is outside the project (an LLM server), never for our own models."""
