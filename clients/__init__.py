"""Clients of the her-serve HTTP API (CLI, status views)."""
