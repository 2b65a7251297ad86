"""Calls that survive a dead or stalled replica: a deadline, then one retry elsewhere.

Serve retries a request only when its replica died before accepting it; once
accepted, a node's death fails it. So the gateway puts a deadline on each
attempt and, when a replica dies or stalls, retries once, steering
PreferredHostRouter away from the node the lost attempt went to. Model calls routed
here are idempotent (same text in, same audio out), so a retry is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import ReplicaUnavailableError, RequestCancelledError
from ray.serve.handle import DeploymentHandle

from deployments import routing
from graphs.http import APIError

log = logging.getLogger("ray.serve")

REPLICA_LOST = (
    ActorDiedError,
    ActorUnavailableError,
    RayActorError,
    ReplicaUnavailableError,
    RequestCancelledError,
)


@dataclass(frozen=True)
class Failover:
    """A deadline per attempt and how many attempts (the retry goes to another node)."""

    attempt_timeout_s: float
    attempts: int = 2

    async def call(self, handle: DeploymentHandle, method: str, *args, **kwargs):
        """``await handle.<method>.remote(*args, **kwargs)`` with deadline and one retry."""
        request_id = routing.current_request_id()
        start = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                response = getattr(handle, method).remote(*args, **kwargs)
                return await asyncio.wait_for(response, self.attempt_timeout_s)
            except (asyncio.TimeoutError, *REPLICA_LOST) as exc:
                kind = "stalled" if isinstance(exc, asyncio.TimeoutError) else "lost"
                log.warning(
                    "%s.%s attempt %d: replica %s (%s)", handle.deployment_name, method,
                    attempt, kind, type(exc).__name__,
                )
                if attempt == self.attempts:
                    raise APIError(
                        504 if kind == "stalled" else 503,
                        f"{handle.deployment_name} did not answer within "
                        f"{time.monotonic() - start:.1f} s after {attempt} attempts",
                        type="timeout" if kind == "stalled" else "unavailable",
                        headers={"Retry-After": "1"},
                    ) from None
                routing.steer_away(request_id, routing.served_by(request_id))
