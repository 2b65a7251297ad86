"""PreferredHostRouter's ranking (preferred node first, the other as fallback) and the
RoutingState it reports to."""

from __future__ import annotations

import importlib
import time

from graphs.routing import PreferredHostRouter, RoutingState, rank_by_host

HOSTS = {"t1": "titan", "p1": "panda", "x1": None}


def rank(replicas, preference, avoid=None):
    return rank_by_host(replicas, HOSTS.get, preference, avoid)


def test_preferred_host_first_then_the_other():
    assert rank(["t1", "p1"], ["panda", "titan"]) == [["p1"], ["t1"]]
    assert rank(["t1", "p1"], ["titan", "panda"]) == [["t1"], ["p1"]]


def test_dead_preferred_node_leaves_the_fallback():
    assert rank(["t1"], ["panda", "titan"]) == [["t1"]]


def test_avoid_sends_a_retry_to_the_other_node():
    assert rank(["t1", "p1"], ["panda", "titan"], avoid="panda") == [["t1"], ["p1"]]


def test_unknown_hosts_rank_after_known_ones():
    assert rank(["x1", "t1", "p1"], ["panda", "titan"]) == [["p1"], ["t1"], ["x1"]]
    assert rank([], ["panda", "titan"]) == []


def test_state_steers_one_request_and_suspects_a_host_for_everyone():
    state = RoutingState()
    state.steer_away("r1", "panda")
    assert state.avoided("r1") == {"panda"} and state.avoided("r2") == set()
    state.suspect("titan", for_s=60)
    assert state.avoided("r2") == {"titan"} and state.avoided("r1") == {"panda", "titan"}
    state.steer_away("r1", None)
    assert state.avoided("r1") == {"titan"}


def test_a_suspicion_expires_by_itself():
    state = RoutingState()
    state.suspect("panda", for_s=0.05)
    assert state.suspected() == {"panda"}
    time.sleep(0.1)
    assert state.suspected() == set()


def test_each_call_is_reported_on_its_own_and_the_table_is_bounded():
    state = RoutingState()
    state.routed("PiperTTS", "call-1", {"panda", "titan"}, "panda")
    state.routed("PiperTTS", "call-2", {"panda", "titan"}, "titan")
    assert state.served_by("call-1") == "panda" and state.served_by("call-2") == "titan"
    assert state.replica_hosts("PiperTTS") == {"panda", "titan"}
    for i in range(RoutingState.TABLE_SIZE + 10):
        state.routed("PiperTTS", f"c{i}", {"titan"}, "titan")
    assert state.served_by("call-1") is None  # the oldest fell off
    assert state.served_by(f"c{RoutingState.TABLE_SIZE + 9}") == "titan"
    assert state.replica_hosts("PiperTTS") == {"titan"}


def test_the_router_is_loaded_by_its_import_path_from_graphs():
    from topology.serve_config import DeploymentSpec

    spec = DeploymentSpec(hosts=["panda", "titan"], routing="preferred_host", num_replicas=2)
    path = spec.ray_options()["request_router_config"]["request_router_class"]
    module, name = path.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is PreferredHostRouter
