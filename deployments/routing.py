"""A Serve request router that prefers one node and falls back to the other.

TTS keeps one warm replica per node (``max_replicas_per_node: 1``). This
router sends traffic to the replica on the most preferred live host (Kokoro:
titan; Chatterbox: panda), uses the other one when the preferred replica is
gone or full, and goes back by itself when the preferred node returns, since
ranking happens per request.

The router runs inside the caller's process (the gateway, a graph), so the
caller steers it and learns where a call went through small in-process
tables: keyed by Serve's internal request id, which every handle call made
while serving one HTTP request carries, ``steer_away`` before a retry and
``served_by`` after a call; per deployment, ``replica_hosts``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Sequence, TypeVar

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

NODE_CACHE_S = 5.0
TABLE_SIZE = 4096  # requests remembered; old entries fall off

_avoid: OrderedDict[str, str] = OrderedDict()
_served: OrderedDict[str, str] = OrderedDict()
_suspect: dict[str, float] = {}  # host -> until (monotonic): ranked last for every request
_hosts: dict[str, set[str]] = {}  # deployment -> hosts of its replicas at the latest routing


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


def suspect(host: str | None, for_s: float) -> None:
    """A replica on ``host`` was just lost: rank that host last for everyone for a while.

    Serve drops a dead node's replicas only after Ray's health checks (seconds);
    meanwhile this keeps new calls off it. It expires by itself, so traffic
    returns to the preferred host without anyone clearing it.
    """
    if host:
        _suspect[host] = time.monotonic() + for_s


def suspected() -> set[str]:
    now = time.monotonic()
    return {h for h, until in _suspect.items() if until > now}


def replica_hosts(deployment: str) -> set[str]:
    """Hosts that had a replica of ``deployment`` when this process last routed a call to it."""
    return _hosts.get(deployment, set())


def served_by(request_id: str) -> str | None:
    """The host of the replica this request's latest routed call went to."""
    return _served.get(request_id)

R = TypeVar("R")


def rank_by_host(
    replicas: Sequence[R],
    host_of: Callable[[R], str | None],
    preference: Sequence[str],
    avoid: str | set[str] | None = None,
) -> list[list[R]]:
    """Group replicas by host in preference order; unknown hosts next, ``avoid`` last."""
    avoid = {avoid} if isinstance(avoid, str) else set(avoid or ())
    order = [h for h in preference if h not in avoid]
    ranks: list[list[R]] = [[] for _ in order]
    unknown: list[R] = []
    avoided: list[R] = []
    for r in replicas:
        host = host_of(r)
        if host in avoid:
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
        # Serve ships this class by value, so its globals are a copy: reach the
        # tables the caller reads through the real module.
        from deployments import routing as shared

        request_id = pending_request.metadata.internal_request_id if pending_request else ""
        avoid = shared.suspected() | {shared._avoid.get(request_id)} - {None}
        ranks = rank_by_host(candidate_replicas, self._host, self.hosts, avoid)
        shared._hosts[self._deployment_id.name] = {self._host(r) or "" for r in candidate_replicas}
        if ranks and request_id:
            # One replica per host (max_replicas_per_node: 1), so the first rank's host is
            # where this call goes unless that replica rejects it for a full queue.
            shared._remember(shared._served, request_id, self._host(ranks[0][0]) or "")
        return ranks
