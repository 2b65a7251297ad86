"""Hardware profile and node identity of the process a model runs in."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass


def cuda_available() -> bool:
    """True when CUDA torch sees a device. torch is imported only here, lazily."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_profile(profile: str) -> str:
    """Turn ``auto`` into ``gpu`` or ``cpu`` for the machine this runs on."""
    if profile not in ("auto", "gpu", "cpu"):
        raise ValueError(f"profile must be auto, gpu or cpu, not {profile!r}")
    if profile == "auto":
        return "gpu" if cuda_available() else "cpu"
    if profile == "gpu" and not cuda_available():
        raise RuntimeError("profile 'gpu' was asked for but no CUDA device is visible")
    return profile


@dataclass(frozen=True)
class Placement:
    """Where a replica runs: the Ray node's host label, its id and the process."""

    host: str
    node_id: str
    pid: int

    def to_dict(self) -> dict:
        return asdict(self)


def current_placement() -> Placement:
    """The host label (titan/panda) of the Ray node this process runs on."""
    host, node_id = socket.gethostname(), ""
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            node_id = ctx.get_node_id()
            host = ctx.get_node_labels().get("host", host)
    except Exception:  # outside Ray, or a Ray without labels: fall back to hostname
        pass
    return Placement(host=host, node_id=node_id, pid=os.getpid())
