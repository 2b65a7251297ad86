"""The throwaway clusters' ports: Ray refuses a node whose pre-selected ports repeat, and
Serve's proxy fails to start when its port was taken before it bound it."""

from pathlib import Path

from cluster.sandbox import free_ports, quiet_ports


def test_ports_picked_together_never_repeat():
    # Picked one by one (bind, release, bind again) 500 ports repeated 8-11 times here;
    # a CI run failed on two of a node's four agent ports being the same.
    ports = free_ports(500)
    assert len(set(ports)) == len(ports)


def test_ports_come_from_where_the_os_never_assigns_one_by_itself():
    """A proxy port picked in the ephemeral range was taken by one of Ray's own
    connections while the cluster started ('Failed to bind to address')."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = free_ports(50)
    assert all(p in quiet_ports() and not low <= p <= high for p in ports)
    assert all(20000 <= p < 30000 for p in ports)  # Ray's workers and Serve's direct ingress
