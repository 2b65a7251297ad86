"""Ray-free configuration below ``graphs/`` and ``cluster/``: what runs where.

``serve_config``: the deployments' topology in ``serve_config.yaml``'s app args;
``nodes``: the machines (``nodes.yaml``). Only pydantic and PyYAML: the capacity
planner and the CLI read them without Ray.
"""
