"""What every model deployment shares: its GPU memory cap, identity and health.

Ray's fractional GPUs are bookkeeping only, so each replica caps its own
memory to what ``serve_config.yaml`` declares, before its model loads.
"""

from __future__ import annotations

import logging
from typing import Protocol

from deployments.profile import current_placement

log = logging.getLogger("ray.serve")

GIB = 1024**3


class Engine(Protocol):
    def load(self) -> None: ...

    def info(self) -> dict: ...


def cap_gpu_memory(gpu_memory_gb: float) -> float | None:
    """Limit this process's CUDA allocations to ``gpu_memory_gb``.

    Returns the fraction of the device set, or None where there is no CUDA
    device (CPU profile) or nothing was declared. An allocation past the cap
    raises torch.cuda.OutOfMemoryError in this process only.
    """
    if gpu_memory_gb <= 0:
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, gpu_memory_gb * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    log.info("GPU memory capped to %.2f GB (%.3f of the device)", gpu_memory_gb, fraction)
    return fraction


class ModelReplica:
    """Base of model deployments: cap memory, load the engine, report where it runs."""

    def __init__(self, engine: Engine, gpu_memory_gb: float = 0.0):
        self.gpu_memory_gb = gpu_memory_gb
        self.gpu_fraction = cap_gpu_memory(gpu_memory_gb)
        self.engine = engine
        self.engine.load()
        self.placement = current_placement()

    def reconfigure(self, user_config: dict) -> None:
        """Serve calls this with the deployment's user_config (from serve_config.yaml)."""
        declared = float(user_config.get("gpu_memory_gb", self.gpu_memory_gb))
        if declared != self.gpu_memory_gb:
            self.gpu_memory_gb = declared
            self.gpu_fraction = cap_gpu_memory(declared)
        self.configure(user_config)

    def configure(self, user_config: dict) -> None:
        """Hook for per-deployment settings (batch sizes...)."""

    def info(self) -> dict:
        return {
            **self.engine.info(),
            **self.placement.to_dict(),
            "gpu_memory_gb": self.gpu_memory_gb,
            "gpu_memory_capped": self.gpu_fraction is not None,
        }
