"""What the gateway can call: the running deployments' handles, and why others are absent."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request

from deployments.results import ReplicaInfo
from deployments.settings import Settings
from graphs.embed_calls import EmbedCalls
from graphs.failover import TTSCalls
from graphs.http import root_cause, scrub, unavailable

INFO_TTL_S = 10.0


@dataclass
class Services:
    handles: dict[str, DeploymentHandle]
    unavailable: dict[str, str]
    """Deployment name to the reason it was not started (weights absent, disabled...)."""
    tasks: dict[str, str]
    """Deployment name to its task (embeddings, stt, tts, ner...)."""
    tts: TTSCalls
    """This gateway's TTS traffic: routing state, hedge policies, admission."""
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per model deployment, per host: "available" or why not, as the nodes answered at build."""
    _embed_calls: dict[str, EmbedCalls] = field(default_factory=dict)
    _info: dict[str, list[ReplicaInfo]] = field(default_factory=dict)
    _info_at: float = 0.0
    _refresh: asyncio.Task | None = None

    def get(self, name: str) -> DeploymentHandle:
        """The handle, or a 503 APIError saying why the deployment is not running."""
        if name in self.handles:
            return self.handles[name]
        raise unavailable(name, self.unavailable.get(name, "not part of this application"))

    def embed_calls(self, name: str) -> EmbedCalls:
        """Calls to the Embedder deployment ``name``, merged across concurrent requests."""
        if name not in self._embed_calls:
            self._embed_calls[name] = EmbedCalls(self.get(name))
        return self._embed_calls[name]

    def node_views(self) -> dict[str, dict[str, str]]:
        """``nodes`` with what each replica last said about itself on its own node."""
        views = {name: dict(hosts) for name, hosts in self.nodes.items()}
        for name, replicas in self._info.items():
            for r in replicas:
                if r.host and r.error is None and name in views:
                    views[name][r.host] = "available" if r.available else scrub(r.reason or "")
        return views

    async def replica_info(self, max_age_s: float = INFO_TTL_S) -> dict[str, list[ReplicaInfo]]:
        """``info()`` of every live replica of every deployment, at most ``max_age_s`` old.

        Routine callers (the default age) get what is cached at once and a refresh
        runs behind them, so no request waits on a dead replica's timeout; a
        caller that asks for fresher data (/v1/status) waits for it.
        """
        age = time.monotonic() - self._info_at
        if self._info and age < max_age_s:
            return self._info
        if self._info and max_age_s >= INFO_TTL_S:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._read_info(keep_last=True))
            return self._info
        await self._read_info(keep_last=max_age_s > 0)
        return self._info

    async def _read_info(self, keep_last: bool) -> None:
        async def one(name: str, handle: DeploymentHandle) -> tuple[str, list[ReplicaInfo]]:
            try:
                return name, list(await handle.broadcast("info").results_async(timeout_s=5))
            except Exception as exc:  # a replica starting, failing, or on a dead node
                # Routine callers keep what the replicas said last time: voices,
                # rates and models do not change when a node dies.
                last = [r for r in self._info.get(name, []) if r.error is None] if keep_last else []
                cause = root_cause(exc)
                return name, last or [ReplicaInfo(error=scrub(f"{type(cause).__name__}: {cause}"))]

        pairs = await asyncio.gather(*(one(n, h) for n, h in self.handles.items()))
        self._info, self._info_at = dict(pairs), time.monotonic()


async def app_services(request: Request) -> Services:
    """FastAPI dependency: the gateway's Services (set by ``build_http_app``).

    ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hand-off per request (~1 ms each here, measured in docs/performance.md)."""
    return request.app.state.services


async def app_settings(request: Request) -> Settings:
    """FastAPI dependency: the gateway's Settings."""
    return request.app.state.settings


ServicesDep = Annotated[Services, Depends(app_services)]
SettingsDep = Annotated[Settings, Depends(app_settings)]
