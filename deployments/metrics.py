"""Per-replica metrics of model deployments, exported through ``ray.serve.metrics``.

Serve already exports per deployment: requests (``serve_deployment_request_counter``),
errors (``serve_deployment_error_counter``), latency
(``serve_deployment_processing_latency_ms``), queue depth
(``serve_deployment_queued_queries`` at the caller, ``serve_replica_processing_queries``
at the replica) and requests per batch (``serve_actual_batch_size``). This adds
what they lack: errors by kind, latency per method, items per forward pass and
GPU memory in use against the replica's cap. Ray tags every series with
``deployment``, ``replica`` and ``application``; Prometheus names get a ``ray_``
prefix (docs/observability.md lists them).
"""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from ray.serve.metrics import Counter, Gauge, Histogram

GIB = 1024**3
LATENCY_BUCKETS_MS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
ITEM_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]


class GPUMemoryExceeded(RuntimeError):
    """A request needed more GPU memory than the replica's declared cap.

    Raised for that request only; the replica and its GPU neighbours keep serving.
    """


class ModelUnavailable(RuntimeError):
    """This replica runs where its model cannot (weights absent on its node): it takes no calls.

    The gateway answers 503; TTS failover treats it like a lost replica.
    """


def is_cuda_oom(exc: BaseException) -> bool:
    """torch's CUDA out-of-memory error, without importing torch where it is unused."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def error_kind(exc: BaseException) -> str:
    """A small fixed vocabulary for the ``kind`` label (bounded cardinality)."""
    if isinstance(exc, GPUMemoryExceeded) or is_cuda_oom(exc):
        return "gpu_oom"
    if isinstance(exc, ModelUnavailable):
        return "unavailable"
    if isinstance(exc, ValueError):
        return "invalid_request"
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return "timeout"
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):  # GeneratorExit: a stream's reader left
        return "cancelled"
    return "internal"


def gpu_memory_used_bytes() -> int | None:
    """Bytes torch has allocated on this process's GPU; None without CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return int(torch.cuda.memory_allocated(0))


class ReplicaMetrics:
    """The metrics one model replica records; create once per replica (in ``__init__``)."""

    def __init__(self, deployment: str, gpu_memory_gb: float):
        self.deployment = deployment
        self.requests = Counter(
            "her_serve_model_requests",
            description="Calls to a model deployment's method.",
            tag_keys=("method",),
        )
        self.errors = Counter(
            "her_serve_model_errors",
            description="Failed calls by kind: gpu_oom, unavailable, invalid_request, timeout, "
                        "cancelled, internal.",
            tag_keys=("method", "kind"),
        )
        self.latency = Histogram(
            "her_serve_model_latency_ms",
            description="Time a model method took inside the replica (ms).",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("method",),
        )
        self.batch_items = Histogram(
            "her_serve_batch_items",
            description="Items (texts, clips...) per forward pass after batching.",
            boundaries=ITEM_BUCKETS,
            tag_keys=("method",),
        )
        self.gpu_used = Gauge(
            "her_serve_gpu_memory_used_bytes",
            description="GPU memory torch has allocated in this replica (absent on CPU).",
        )
        self.gpu_cap = Gauge(
            "her_serve_gpu_memory_cap_bytes",
            description="GPU memory this replica may use, as declared in serve_config.yaml.",
        )
        self.set_cap(gpu_memory_gb)

    def set_cap(self, gpu_memory_gb: float) -> None:
        self.cap_gb = gpu_memory_gb
        self.gpu_cap.set(gpu_memory_gb * GIB)

    def batch(self, method: str, items: int) -> None:
        """Record one forward pass over ``items`` inputs."""
        self.batch_items.observe(items, tags={"method": method})

    def sample_gpu_memory(self) -> int | None:
        """Refresh the memory gauges (a gauge set only once, at start-up, may never be exported)."""
        self.gpu_cap.set(self.cap_gb * GIB)
        used = gpu_memory_used_bytes()
        if used is not None:
            self.gpu_used.set(used)
        return used

    @contextmanager
    def observe(self, method: str) -> Iterator[None]:
        """Count, time and classify one call; turn a CUDA OOM into GPUMemoryExceeded.

        The OOM is answered to this request only: the cached blocks are freed and
        the replica stays up for the next request.
        """
        start = time.perf_counter()
        tags = {"method": method}
        self.requests.inc(tags=tags)
        try:
            yield
        except BaseException as exc:
            self.errors.inc(tags={**tags, "kind": error_kind(exc)})
            if is_cuda_oom(exc):
                sys.modules["torch"].cuda.empty_cache()
                raise GPUMemoryExceeded(
                    f"{self.deployment} needed more GPU memory than its cap of "
                    f"{self.cap_gb:g} GB (gpu_memory_gb in serve_config.yaml) for this "
                    "request; the replica keeps serving. Send a smaller request or "
                    "raise the declared memory."
                ) from exc
            raise
        finally:
            self.latency.observe((time.perf_counter() - start) * 1000, tags=tags)
            self.sample_gpu_memory()
