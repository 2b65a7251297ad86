"""A Serve request router that prefers one node and falls back to the other.

TTS keeps one warm replica per node (``max_replicas_per_node: 1``). This
router sends traffic to the replica on the most preferred live host (Kokoro:
titan; Chatterbox: panda), uses the other one when the preferred replica is
gone or full, and goes back by itself when the preferred node returns, since
ranking happens per request.

The router runs inside the caller's process (the gateway, a graph), so the
caller steers it and learns where a call went through two small in-process
tables keyed by Serve's internal request id, which every handle call made
while serving one HTTP request carries: ``steer_away`` before a retry,
``served_by`` after a call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Sequence, TypeVar

from ray.serve.request_router import (
    FIFOMixin, PendingRequest, ReplicaResult, RequestRouter, RunningReplica,
)

NODE_CACHE_S = 5.0
TABLE_SIZE = 4096  # requests remembered; old entries fall off

_avoid: OrderedDict[str, str] = OrderedDict()
_served: OrderedDict[str, str] = OrderedDict()


def _remember(table: OrderedDict, key: str, value: str) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > TABLE_SIZE:
        table.popitem(last=False)


def current_request_id() -> str:
    """Serve's internal id of the request this code is serving ('' outside a request)."""
    from ray.serve.context import _get_serve_request_context

    return _get_serve_request_context()._internal_request_id


def steer_away(request_id: str, host: str | None) -> None:
    """Route this request's next calls away from ``host`` (None: no preference change)."""
    if host:
        _remember(_avoid, request_id, host)
    else:
        _avoid.pop(request_id, None)


def served_by(request_id: str) -> str | None:
    """The host of the replica this request's latest routed call went to."""
    return _served.get(request_id)

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
        avoid = _avoid.get(pending_request.metadata.internal_request_id) if pending_request else None
        return rank_by_host(candidate_replicas, self._host, self.hosts, avoid)

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id, result: ReplicaResult
    ) -> None:
        replica = self._replicas.get(replica_id)
        host = self._host(replica) if replica is not None else None
        if host:
            _remember(_served, pending_request.metadata.internal_request_id, host)
