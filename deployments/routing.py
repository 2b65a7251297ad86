"""A Serve request router that prefers one node and falls back to the other.

TTS keeps one warm replica per node (``max_replicas_per_node: 1``). This
router sends traffic to the replica on the most preferred live host (Kokoro:
titan; Chatterbox: panda), uses the other one when the preferred replica is
gone or full, and goes back by itself when the preferred node returns, since
ranking happens per request. A caller retrying after a failure passes
``avoid_host`` so the retry lands on the other node.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence, TypeVar

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

AVOID_HOST = "avoid_host"
"""Keyword argument a caller passes to steer a retry away from a host."""

NODE_CACHE_S = 5.0

R = TypeVar("R")


def rank_by_host(
    replicas: Sequence[R],
    host_of: Callable[[R], str | None],
    preference: Sequence[str],
    avoid: str | None = None,
) -> list[list[R]]:
    """Group replicas by host in preference order; unknown hosts next, ``avoid`` last."""
    order = [h for h in preference if h != avoid]
    ranks: list[list[R]] = [[] for _ in order]
    unknown: list[R] = []
    avoided: list[R] = []
    for r in replicas:
        host = host_of(r)
        if avoid is not None and host == avoid:
            avoided.append(r)
        elif host in order:
            ranks[order.index(host)].append(r)
        else:
            unknown.append(r)
    return [rank for rank in (*ranks, unknown, avoided) if rank]


class PreferredHostRouter(FIFOMixin, RequestRouter):
    """Rank replicas by the ``host`` label of their node, in the configured order."""

    def initialize_state(self, hosts: Sequence[str] = ()):
        self.hosts = list(hosts)
        self._node_hosts: dict[str, str] = {}
        self._nodes_read_at = 0.0

    def _host(self, replica: RunningReplica) -> str | None:
        host = self._node_hosts.get(replica.node_id)
        if host is None and time.monotonic() - self._nodes_read_at > NODE_CACHE_S:
            import ray

            self._node_hosts = {
                n["NodeID"]: n.get("Labels", {}).get("host", "") for n in ray.nodes()
            }
            self._nodes_read_at = time.monotonic()
            host = self._node_hosts.get(replica.node_id)
        return host

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        avoid = pending_request.kwargs.get(AVOID_HOST) if pending_request else None
        return rank_by_host(candidate_replicas, self._host, self.hosts, avoid)
