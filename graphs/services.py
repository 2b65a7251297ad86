"""What the gateway can call: the running deployments' handles, and why others are absent."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ray.serve.handle import DeploymentHandle

from graphs.http import unavailable

INFO_TTL_S = 10.0


@dataclass
class Services:
    handles: dict[str, DeploymentHandle]
    unavailable: dict[str, str]
    """Deployment name to the reason it was not started (weights absent, disabled...)."""
    tasks: dict[str, str]
    """Deployment name to its task (embeddings, stt, tts, ner...)."""
    _info: dict[str, list[dict]] = field(default_factory=dict)
    _info_at: float = 0.0

    def get(self, name: str) -> DeploymentHandle:
        """The handle, or a 503 APIError saying why the deployment is not running."""
        if name in self.handles:
            return self.handles[name]
        raise unavailable(name, self.unavailable.get(name, "not part of this application"))

    async def replica_info(self, max_age_s: float = INFO_TTL_S) -> dict[str, list[dict]]:
        """``info()`` of every live replica of every deployment, at most ``max_age_s`` old."""
        if time.monotonic() - self._info_at < max_age_s and self._info:
            return self._info

        async def one(name: str, handle: DeploymentHandle) -> tuple[str, list[dict]]:
            try:
                return name, list(await handle.broadcast("info").results_async(timeout_s=5))
            except Exception as exc:  # a deployment still starting or failing
                return name, [{"error": f"{type(exc).__name__}: {exc}"}]

        pairs = await asyncio.gather(*(one(n, h) for n, h in self.handles.items()))
        self._info, self._info_at = dict(pairs), time.monotonic()
        return self._info
