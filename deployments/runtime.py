"""What every model deployment shares: its GPU memory cap, identity, call path and health.

Ray's fractional GPUs are bookkeeping only, so each replica caps its own
memory to what ``serve_config.yaml`` declares, before its model loads.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol

from deployments.declaration import Availability
from deployments.logs import install_redaction
from deployments.metrics import ModelUnavailable, ReplicaMetrics, gpu_memory_used_bytes
from deployments.profile import current_placement
from deployments.results import EngineInfo, ReplicaInfo

log = logging.getLogger("ray.serve")

GIB = 1024**3
HEALTH_PROBE_EVERY_S = 120.0
"""A replica that answered a request more recently than this is not probed. A probe is a
real inference (about a second of a core for Kokoro or Whisper on CPU); every 30 s, the
idle cluster's probes took 12 % of a core here, and since every replica loads at once they
ran together, a third of the 2 cores for a few seconds (docs/performance.md)."""
HEALTH_PROBE_SPREAD = 0.5
"""Each replica waits HEALTH_PROBE_EVERY_S times 1 to 1 + this (drawn once), so replicas that
loaded together drift apart instead of probing together."""
HEALTH_PROBE_TIMEOUT_S = 8.0
"""Longest wait for a probe (Serve's health_check_timeout_s is 10 s)."""


class Engine(Protocol):
    def availability(self) -> Availability: ...

    def load(self) -> None: ...

    def info(self) -> EngineInfo: ...

    def probe(self) -> None:
        """A tiny real request through the loaded model; raises if the engine cannot work."""


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


CPU_THREADS_ENV = "SERVE_CPU_THREADS"
"""Overrides every engine's thread budget; benchmarks set it on their in-process side to
the replica's ``num_cpus``, so both sides compute with the same threads."""


def cpu_threads(configured: int = 0) -> int:
    """Compute threads for an engine (torch, onnxruntime, CTranslate2): the setting, else
    ``$SERVE_CPU_THREADS``, else the CPUs Ray gave this replica, else the machine's.

    Matching the replica's ``num_cpus`` keeps its model from taking the cores
    Ray has promised to the other replicas (and the gateway) on the node.
    """
    if configured > 0:
        return configured
    if os.environ.get(CPU_THREADS_ENV, "").isdigit() and int(os.environ[CPU_THREADS_ENV]) > 0:
        return int(os.environ[CPU_THREADS_ENV])
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
            if cpus > 0:
                return max(1, math.ceil(cpus))
    except Exception:  # outside a Ray worker
        pass
    return os.cpu_count() or 1


def cpu_onnx_session(model_path: str | os.PathLike):
    """An onnxruntime CPU session on ``cpu_threads()`` threads: onnxruntime would otherwise
    take every core of the machine, not the replica's ``num_cpus``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = cpu_threads(), 1
    return onnxruntime.InferenceSession(str(model_path), options,
                                        providers=["CPUExecutionProvider"])


def compute_on(threads: int) -> None:
    """Torch's CPU threads for calls from this thread (0: leave them as they are).

    OpenMP's thread count belongs to the calling thread, so each lane sets its own."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


class EngineLanes:
    """Threads of a replica's own that run every call of its engine (load, forward
    passes, probes), each computing on ``threads`` CPU threads.

    Torch on CPU keeps an OpenMP team per calling thread: forward passes from
    asyncio's pool make several teams, which spin against each other at their
    barriers (a 2-thread MiniLM forward took 13 ms instead of 7 once another thread
    had run one). A lane is one calling thread, so one team. Lanes of one thread
    each have no team at all: ``count`` of them compute ``count`` batches side by
    side, and one preempted by another process wastes no other core spinning
    (MiniLM, two 1-thread lanes: 1.2-1.3x the sentences/s of one 2-thread forward
    pass at a time, in one process; docs/performance.md, cut 13).
    """

    def __init__(self, count: int = 1, threads: int = 0):
        self.count = count
        self.pool = ThreadPoolExecutor(count, thread_name_prefix="engine",
                                       initializer=compute_on, initargs=(threads,))

    async def run(self, fn: Callable, *args) -> Any:
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)


class ModelReplica:
    """Base of model deployments: cap memory, load the engine, report where it runs.

    Every public method of a subclass is wrapped once, when the class is made
    (``__init_subclass__``), by ``_replica_call``: requests, errors by kind,
    latency and GPU memory are recorded the same way everywhere, and a CUDA OOM
    fails only that request (``GPUMemoryExceeded``, a 503 at the gateway).
    Lifecycle hooks (``reconfigure``, ``configure``, ``check_health``) are not calls.
    """

    LIFECYCLE = frozenset({"reconfigure", "configure", "check_health"})
    BOOKKEEPING = frozenset({"info", "voices", "cancel", "content_hashes"})
    """Calls whose success says nothing about the engine (they do not spare a health probe)."""

    def __init__(
        self, make_engine: Callable[[Any, str], Engine], settings: Any, profile: str,
        gpu_memory_gb: float = 0.0,
    ):
        install_redaction()
        self.gpu_memory_gb = gpu_memory_gb
        self.gpu_fraction = cap_gpu_memory(gpu_memory_gb)
        self.metrics = ReplicaMetrics(_deployment_name(type(self).__name__), gpu_memory_gb)
        self.placement = current_placement()
        # Decided here, on the node that runs the replica: its hardware, its disk.
        self.engine, self.unavailable = engine_on_this_node(make_engine, settings, profile)
        self.lanes = None if self.unavailable else self.engine_lanes()
        if self.unavailable:
            log.warning("%s on %s takes no calls: %s", self.metrics.deployment,
                        self.placement.host, self.unavailable)
        elif self.lanes:
            self.lanes.pool.submit(self.engine.load).result()
        else:
            self.engine.load()
        # When the engine last answered; check_health probes probe_every_s after. A model
        # that has just loaded counts: Serve's first check comes while every replica of the
        # node starts at once, when a probe can take longer than its timeout.
        self.last_ok = time.monotonic()
        self.probe_every_s = HEALTH_PROBE_EVERY_S * (1 + random.uniform(0, HEALTH_PROBE_SPREAD))
        self._probe: asyncio.Task | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        wrap_public_methods(cls)

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

    def engine_lanes(self) -> EngineLanes | None:
        """Threads of the replica's own for its engine's calls (``EngineLanes``); None:
        asyncio's default pool."""
        return None

    async def _on_engine_thread(self, fn: Callable, *args) -> Any:
        """``fn(*args)`` off the event loop: on a lane (``engine_lanes``), else on
        asyncio's default pool."""
        if self.lanes is None:
            return await asyncio.to_thread(fn, *args)
        return await self.lanes.run(fn, *args)

    async def check_health(self) -> None:
        """Serve's health check: the engine must still answer a tiny real request.

        A request that succeeded in the last ``probe_every_s`` is proof enough;
        otherwise the engine's ``probe()`` runs (one at a time). A probe that fails,
        or is still stuck from an earlier check, fails the check and Serve
        replaces this replica.
        """
        if self.unavailable or time.monotonic() - self.last_ok < self.probe_every_s:
            return  # a replica without its model is alive; it refuses calls instead
        if self._probe is None:
            self._probe = asyncio.create_task(self._on_engine_thread(self.engine.probe))
        probe, started = self._probe, time.monotonic()
        done, _ = await asyncio.wait({probe}, timeout=HEALTH_PROBE_TIMEOUT_S)
        if not done:
            raise RuntimeError(f"the engine has not answered a health probe in "
                               f"{time.monotonic() - started:.0f} s")
        self._probe = None
        probe.result()  # raises what the engine raised
        self.last_ok = time.monotonic()

    def info(self) -> ReplicaInfo:
        used = gpu_memory_used_bytes()
        engine = EngineInfo(model=self.metrics.deployment) if self.unavailable else self.engine.info()
        return ReplicaInfo(
            **engine.fields(),
            **self.placement.to_dict(),
            profile=getattr(self.engine, "profile", None),
            available=not self.unavailable,
            reason=self.unavailable or None,
            gpu_memory_gb=self.gpu_memory_gb,
            gpu_memory_capped=self.gpu_fraction is not None,
            gpu_memory_used_gb=None if used is None else round(used / GIB, 3),
        )


def engine_on_this_node(make_engine: Callable, settings: Any, profile: str) -> tuple[Any, str]:
    """The engine for this node (profile auto resolved here, this node's model cache),
    and why it cannot run here ("" when it can)."""
    try:
        engine = make_engine(settings.on_this_node(), profile)
    except RuntimeError as exc:  # e.g. profile gpu on a node without CUDA
        return None, str(exc)
    avail = engine.availability()
    return engine, "" if avail.ok else avail.reason


def wrap_public_methods(cls: type) -> None:
    """Wrap every public method ``cls`` defines itself (once) in ``_replica_call``."""
    for name, fn in list(vars(cls).items()):
        if (name.startswith("_") or name in ModelReplica.LIFECYCLE or not inspect.isfunction(fn)
                or getattr(fn, "__replica_call__", False)):
            continue
        setattr(cls, name, _replica_call(fn))


def _replica_call(fn: Callable) -> Callable:
    """The one call path of a replica method: metrics and error mapping around it."""
    name = fn.__name__
    proves_engine = name not in ModelReplica.BOOKKEEPING

    def worked(self) -> None:
        if proves_engine:
            self.last_ok = time.monotonic()

    def refuse_without_model(self) -> None:
        if self.unavailable and name != "info":
            raise ModelUnavailable(f"{self.metrics.deployment} on {self.placement.host} "
                                   f"takes no calls: {self.unavailable}")

    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def stream(self, *args, **kwargs):
            with self.metrics.observe(name):
                refuse_without_model(self)
                async for item in fn(self, *args, **kwargs):
                    worked(self)  # each piece is proof: a long stream spares the probe
                    yield item
        wrapper = stream
    elif inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def call(self, *args, **kwargs):
            with self.metrics.observe(name):
                refuse_without_model(self)
                result = await fn(self, *args, **kwargs)
            worked(self)
            return result
        wrapper = call
    else:
        @functools.wraps(fn)
        def call_sync(self, *args, **kwargs):
            with self.metrics.observe(name):
                refuse_without_model(self)
                result = fn(self, *args, **kwargs)
            worked(self)
            return result
        wrapper = call_sync
    wrapper.__replica_call__ = True
    return wrapper


wrap_public_methods(ModelReplica)


def _deployment_name(default: str) -> str:
    """The Serve deployment name (``BatchEmbedder`` shares the Embedder class)."""
    try:
        from ray import serve

        return serve.get_replica_context().deployment
    except Exception:  # outside a Serve replica (unit tests)
        return default
