"""Fixtures for the unit tests (no Ray cluster)."""

from __future__ import annotations

import functools
from typing import Callable

import httpx
import pytest

from clients import HerClient, cli


@pytest.fixture
def cli_server(monkeypatch):
    """The CLI's client, talking to a scripted server: ``cli_server(handler)`` routes every
    request the CLI sends to ``handler`` (an ``httpx.MockTransport`` handler) and returns it."""

    def use(handler: Callable[[httpx.Request], httpx.Response]):
        monkeypatch.setattr(cli, "HerClient",
                            functools.partial(HerClient, transport=httpx.MockTransport(handler)))
        return handler

    return use
