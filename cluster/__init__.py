"""Node definitions, capacity planning, start scripts and the local two-node cluster."""
