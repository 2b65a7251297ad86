"""Start scripts, the capacity planner's command line, the local two-node cluster,
and the sandbox tests and benchmarks run on."""
