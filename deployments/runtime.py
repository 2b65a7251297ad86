"""What every model deployment shares: its GPU memory cap, identity and health.

Ray's fractional GPUs are bookkeeping only, so each replica caps its own
memory to what ``serve_config.yaml`` declares, before its model loads.
"""

from __future__ import annotations

import logging
from typing import Protocol

from deployments.logs import install_redaction
from deployments.metrics import ReplicaMetrics, gpu_memory_used_bytes
from deployments.profile import current_placement

log = logging.getLogger("ray.serve")

GIB = 1024**3


class Engine(Protocol):
    def load(self) -> None: ...

    def info(self) -> dict: ...


def cap_fraction(gpu_memory_gb: float, total_bytes: int) -> float:
    """The share of a device of ``total_bytes`` that ``gpu_memory_gb`` is, at most 1."""
    if gpu_memory_gb <= 0 or total_bytes <= 0:
        raise ValueError("declared GPU memory and the device size must be positive")
    return min(1.0, gpu_memory_gb * GIB / total_bytes)


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
    fraction = cap_fraction(gpu_memory_gb, torch.cuda.get_device_properties(0).total_memory)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    log.info("GPU memory capped to %.2f GB (%.3f of the device)", gpu_memory_gb, fraction)
    return fraction


class ModelReplica:
    """Base of model deployments: cap memory, load the engine, report where it runs.

    Subclasses wrap each public method's work in ``with self.metrics.observe(name):``
    so requests, errors by kind, latency and GPU memory are recorded the same way
    everywhere, and a CUDA OOM fails only that request.
    """

    def __init__(self, engine: Engine, gpu_memory_gb: float = 0.0):
        install_redaction()
        self.gpu_memory_gb = gpu_memory_gb
        self.gpu_fraction = cap_gpu_memory(gpu_memory_gb)
        self.metrics = ReplicaMetrics(_deployment_name(type(self).__name__), gpu_memory_gb)
        self.engine = engine
        self.engine.load()
        self.placement = current_placement()

    def reconfigure(self, user_config: dict) -> None:
        """Serve calls this with the deployment's user_config (from serve_config.yaml)."""
        declared = float(user_config.get("gpu_memory_gb", self.gpu_memory_gb))
        if declared != self.gpu_memory_gb:
            self.gpu_memory_gb = declared
            self.gpu_fraction = cap_gpu_memory(declared)
            self.metrics.set_cap(declared)
        self.configure(user_config)

    def configure(self, user_config: dict) -> None:
        """Hook for per-deployment settings (batch sizes...)."""

    def info(self) -> dict:
        used = gpu_memory_used_bytes()
        return {
            **self.engine.info(),
            **self.placement.to_dict(),
            "gpu_memory_gb": self.gpu_memory_gb,
            "gpu_memory_capped": self.gpu_fraction is not None,
            "gpu_memory_used_gb": None if used is None else round(used / GIB, 3),
        }


def _deployment_name(default: str) -> str:
    """The Serve deployment name (``BatchEmbedder`` shares the Embedder class)."""
    try:
        from ray import serve

        return serve.get_replica_context().deployment
    except Exception:  # outside a Serve replica (unit tests)
        return default
