"""The throwaway clusters' ports: Ray refuses a node whose pre-selected ports repeat."""

from cluster.sandbox import free_ports


def test_ports_picked_together_never_repeat():
    # Picked one by one (bind, release, bind again) 500 ports repeated 8-11 times here;
    # a CI run failed on two of a node's four agent ports being the same.
    ports = free_ports(500)
    assert len(set(ports)) == len(ports)

