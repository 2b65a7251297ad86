"""``build_app``: the Serve application named in ``serve_config.yaml``.

Reads the topology from the app's args and the machine settings from the
environment, binds every enabled deployment whose weights are present, and
tells the gateway why the others are not running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from ray.serve import Application
from ray.serve.deployment import Deployment

from cluster.nodes import load_nodes
from deployments import (
    chatterbox, embedding, graph_index, kokoro, llm, model_cache, ner, piper, stt, vector_index,
)
from deployments.profile import resolve_profile
from deployments.settings import Settings
from graphs.gateway import Gateway
from graphs.ingest import IngestGraph
from graphs.retrieval import RetrievalGraph
from graphs.voice import VoiceGraph
from graphs.topology import AppArgs, DeploymentSpec

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ModelDeployment:
    """How to check and bind one model deployment."""

    task: str
    deployment: Deployment
    availability: Callable[[Settings, str], object]
    """(settings, profile) -> model_cache.Availability, checked before binding."""
    bind_args: Callable[[Settings, str], tuple]
    uses: dict[str, str] = field(default_factory=dict)
    """Constructor argument -> deployment whose handle it gets; it must be running."""
    optional: dict[str, str] = field(default_factory=dict)
    """Like ``uses``, but None (and ``<arg>_unavailable``: why) when not running."""
    model: bool = True
    """False for graphs: no model, no GPU memory cap argument."""


def _embedder(role: str) -> ModelDeployment:
    def engine(s: Settings, profile: str) -> embedding.EmbeddingEngine:
        return embedding.EmbeddingEngine(s.embedding, profile, s.model_cache, role)

    return ModelDeployment(
        task="embeddings",
        deployment=embedding.Embedder,
        availability=lambda s, p: engine(s, p).availability(),
        bind_args=lambda s, p: (s.embedding, p, str(s.model_cache), role),
    )


def _index(deployment: Deployment, engine: type, task: str) -> ModelDeployment:
    return ModelDeployment(
        task=task,
        deployment=deployment,
        availability=lambda s, p: engine(s.stores, s.data_dir, p).availability(),
        bind_args=lambda s, p: (s.stores, str(s.data_dir), p),
    )


def _ready(_: Settings, __: str) -> model_cache.Availability:
    return model_cache.Availability(True)


RETRIEVAL_USES = {"embedder": "Embedder", "vectors": "VectorIndex", "graph": "GraphIndex"}

# Every deployment the gateway knows, by the name used in serve_config.yaml.
MODEL_DEPLOYMENTS: dict[str, ModelDeployment] = {
    "Embedder": _embedder("realtime"),
    "BatchEmbedder": _embedder("batch"),
    "GlinerNER": ModelDeployment(
        task="ner",
        deployment=ner.GlinerNER,
        availability=lambda s, p: ner.NerEngine(s.ner, s.model_cache, p).availability(),
        bind_args=lambda s, p: (s.ner, str(s.model_cache), p),
    ),
    "VectorIndex": _index(vector_index.VectorIndex, vector_index.VectorIndexEngine, "vector-index"),
    "GraphIndex": _index(graph_index.GraphIndex, graph_index.GraphIndexEngine, "graph-index"),
    "RetrievalGraph": ModelDeployment(
        task="retrieval", deployment=RetrievalGraph, availability=_ready,
        bind_args=lambda s, p: (), uses=RETRIEVAL_USES, model=False,
    ),
    "VoiceGraph": ModelDeployment(
        task="voice", deployment=VoiceGraph, availability=_ready,
        bind_args=lambda s, p: (s.llm, s.speech), uses={"stt": "WhisperSTT"},
        optional={"llm": "ChatLLM", "kokoro": "KokoroTTS", "piper": "PiperTTS", "chatterbox": "ChatterboxTTS",
                  "retrieval": "RetrievalGraph"},
        model=False,
    ),
    "IngestGraph": ModelDeployment(
        task="ingest", deployment=IngestGraph, availability=_ready,
        bind_args=lambda s, p: (s.stores, s.ner), uses=RETRIEVAL_USES,
        optional={"ner": "GlinerNER"}, model=False,
    ),
    "WhisperSTT": ModelDeployment(
        task="stt",
        deployment=stt.WhisperSTT,
        availability=lambda s, p: stt.WhisperEngine(
            s.speech.whisper, p, s.model_cache, s.data_dir).availability(),
        bind_args=lambda s, p: (s.speech.whisper, p, str(s.model_cache), str(s.data_dir)),
    ),
    "ChatLLM": ModelDeployment(
        task="chat",
        deployment=llm.ChatLLM,
        availability=lambda s, p: llm.ChatEngine(s.llm, p).availability(),
        bind_args=lambda s, p: (s.llm, p),
    ),
    "KokoroTTS": ModelDeployment(
        task="tts",
        deployment=kokoro.KokoroTTS,
        availability=lambda s, p: kokoro.KokoroEngine(s.speech.kokoro, p, s.model_cache).availability(),
        bind_args=lambda s, p: (s.speech.kokoro, p, str(s.model_cache)),
    ),
    "PiperTTS": ModelDeployment(
        task="tts",
        deployment=piper.PiperTTS,
        availability=lambda s, p: piper.PiperEngine(s.speech.piper_voice).availability(),
        bind_args=lambda s, p: (s.speech.piper_voice,),
    ),
    "ChatterboxTTS": ModelDeployment(
        task="tts",
        deployment=chatterbox.ChatterboxTTS,
        availability=lambda s, p: chatterbox.ChatterboxEngine(
            s.speech.chatterbox, p, s.model_cache).availability(),
        bind_args=lambda s, p: (s.speech.chatterbox, p, str(s.model_cache)),
    ),
}


def build_app(args: dict) -> Application:
    """Serve's app builder: ``import_path: graphs.app:build_app``."""
    app_args = AppArgs.model_validate(args or {})
    settings = Settings()
    profile = resolve_profile(app_args.profile if app_args.profile != "auto" else settings.profile)
    handles, unavailable = {}, {}
    # Models first, then the graphs that compose them.
    for name, spec in sorted(app_args.deployments.items(), key=lambda kv: _depth(kv[0])):
        if name == "Gateway":
            continue
        reason = _why_not(name, spec, settings, profile) or _missing(name, handles, unavailable)
        if reason:
            unavailable[name] = reason
            log.warning("deployment %s not started: %s", name, reason)
            continue
        model = MODEL_DEPLOYMENTS[name]
        kwargs = {arg: handles[dep] for arg, dep in model.uses.items()}
        for arg, dep in model.optional.items():
            kwargs[arg] = handles.get(dep)
            kwargs[f"{arg}_unavailable"] = unavailable.get(dep, "not part of this application")
        if model.model:
            kwargs["gpu_memory_gb"] = spec.gpu_memory_gb
        handles[name] = (
            model.deployment.options(name=name, **spec.ray_options())
            .bind(*model.bind_args(settings, profile), **kwargs)
        )
    gateway_spec = app_args.deployments.get("Gateway", DeploymentSpec(max_ongoing_requests=200))
    tasks = {name: MODEL_DEPLOYMENTS[name].task for name in app_args.deployments if name in MODEL_DEPLOYMENTS}
    return Gateway.options(**gateway_spec.ray_options()).bind(
        settings, handles, unavailable, tasks, app_args, load_nodes()
    )


def _depth(name: str) -> int:
    """0 for models, 1 + the deepest dependency for graphs: bind order, dependencies first."""
    model = MODEL_DEPLOYMENTS.get(name)
    deps = [*model.uses.values(), *model.optional.values()] if model else []
    return 1 + max(map(_depth, deps)) if deps else 0


def _missing(name: str, handles: dict, unavailable: dict) -> str:
    needed = [dep for dep in MODEL_DEPLOYMENTS[name].uses.values() if dep not in handles]
    return "; ".join(f"needs {dep}: {unavailable.get(dep, 'not configured')}" for dep in needed)


def _why_not(name: str, spec: DeploymentSpec, settings: Settings, profile: str) -> str:
    if not spec.enabled:
        return "disabled in serve_config.yaml"
    if name not in MODEL_DEPLOYMENTS:
        return "no such deployment in this version of the code"
    avail = MODEL_DEPLOYMENTS[name].availability(settings, profile)
    return "" if avail.ok else avail.reason
