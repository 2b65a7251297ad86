"""Where TTS calls go: a Serve request router that prefers one node, and the state that steers it.

TTS keeps one warm replica per node (``max_replicas_per_node: 1``).
``PreferredHostRouter`` sends traffic to the replica on the most preferred
live host (Kokoro: titan; Chatterbox and Piper: panda), uses the other one
when the preferred replica is gone or full, and goes back by itself when the
preferred node returns, since ranking happens per request.

Routing is a concern of the caller (the gateway, or the voice graph for its
turns): a router runs inside the caller's process, and the caller steers it
and learns where a call went through one ``RoutingState`` object. Steering is
keyed by Serve's internal request id, which every handle call made while
serving one HTTP request carries; where a call went, by the call's own
``session_id`` (a handle option the caller sets per call), since the
sentences of one request are in flight together.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Sequence, TypeVar

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

NODE_CACHE_S = 5.0


def current_request_id() -> str:
    """Serve's internal id of the request this code is serving ('' outside a request)."""
    from ray.serve.context import _get_serve_request_context

    return _get_serve_request_context()._internal_request_id


class RoutingState:
    """One caller process's routing hints and observations.

    - ``steer_away(request, host)``: that request's next calls rank ``host`` last (a retry);
    - ``suspect(host)``: every request ranks ``host`` last for a while (a lost replica);
    - ``served_by(call)``: the host a call (its ``session_id``) was routed to;
    - ``replica_hosts(deployment)``: hosts of its replicas at the latest routing.

    The router writes from Serve's router event loop (a thread of its own), the
    streams read from the caller's loop: a lock keeps the tables whole.
    """

    TABLE_SIZE = 4096  # requests remembered; old entries fall off

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._avoid: OrderedDict[str, str] = OrderedDict()
        self._served: OrderedDict[str, str] = OrderedDict()
        self._suspect: dict[str, float] = {}  # host -> until (monotonic)
        self._hosts: dict[str, set[str]] = {}

    def _remember(self, table: OrderedDict, key: str, value: str) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.TABLE_SIZE:
            table.popitem(last=False)

    def steer_away(self, request_id: str, host: str | None) -> None:
        """Route this request's next calls away from ``host`` (None: no preference change)."""
        with self._lock:
            if host:
                self._remember(self._avoid, request_id, host)
            else:
                self._avoid.pop(request_id, None)

    def suspect(self, host: str | None, for_s: float) -> None:
        """A replica on ``host`` was just lost: rank that host last for everyone for a while.

        Serve drops a dead node's replicas only after Ray's health checks (seconds);
        meanwhile this keeps new calls off it. It expires by itself, so traffic
        returns to the preferred host without anyone clearing it.
        """
        if host:
            with self._lock:
                self._suspect[host] = time.monotonic() + for_s

    def suspected(self) -> set[str]:
        now = time.monotonic()
        with self._lock:
            return {h for h, until in self._suspect.items() if until > now}

    def avoided(self, request_id: str) -> set[str]:
        """Hosts this request's next call should rank last: suspects, and its own steer."""
        steered = self._avoid.get(request_id)
        return self.suspected() | ({steered} if steered else set())

    def routed(self, deployment: str, call_id: str, hosts: set[str], host: str | None) -> None:
        """The router's report: ``deployment`` has replicas on ``hosts``; call ``call_id`` goes to ``host``."""
        with self._lock:
            self._hosts[deployment] = hosts
            if call_id and host is not None:
                self._remember(self._served, call_id, host)

    def replica_hosts(self, deployment: str) -> set[str]:
        """Hosts that had a replica of ``deployment`` when this process last routed a call to it."""
        return self._hosts.get(deployment, set())

    def served_by(self, call_id: str) -> str | None:
        """The host of the replica call ``call_id`` was routed to (None: not routed yet)."""
        return self._served.get(call_id)


_process_state = RoutingState()


def process_state() -> RoutingState:
    """This process's RoutingState: the one the routers of its handles report to.

    Serve instantiates PreferredHostRouter itself (from the import path in
    ``request_router_config``), so the caller cannot hand it the object: the
    router looks it up here. Everything else receives it explicitly from its
    owner (the Gateway's Services, the VoiceGraph).
    """
    return _process_state


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
        # Serve pickles this module by value with the class, so its globals here are a
        # copy: the process's real state is reached through a fresh import.
        from graphs.routing import process_state

        state = process_state()
        meta = pending_request.metadata if pending_request else None
        ranks = rank_by_host(candidate_replicas, self._host, self.hosts,
                             state.avoided(meta.internal_request_id if meta else ""))
        # One replica per host (max_replicas_per_node: 1), so the first rank's host is
        # where this call goes unless that replica rejects it for a full queue.
        state.routed(self._deployment_id.name, meta.session_id if meta else "",
                     {self._host(r) or "" for r in candidate_replicas},
                     (self._host(ranks[0][0]) or "") if ranks else None)
        return ranks
