"""PreferredHostRouter's ranking: preferred node first, the other as fallback."""

from __future__ import annotations

from deployments.routing import rank_by_host

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
