"""``build_app``: the Serve application named in ``serve_config.yaml``.

Reads the topology from the app's args and the machine settings from the
environment, binds every enabled deployment whose weights are present, and
tells the gateway why the others are not running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments import chatterbox, embedding, kokoro, piper, stt
from deployments.profile import resolve_profile
from deployments.settings import Settings
from graphs.gateway import Gateway
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


def _embedder(role: str) -> ModelDeployment:
    def engine(s: Settings, profile: str) -> embedding.EmbeddingEngine:
        return embedding.EmbeddingEngine(s.embedding, profile, s.model_cache, role)

    return ModelDeployment(
        task="embeddings",
        deployment=embedding.Embedder,
        availability=lambda s, p: engine(s, p).availability(),
        bind_args=lambda s, p: (s.embedding, p, str(s.model_cache), role),
    )


# Every deployment the gateway knows, by the name used in serve_config.yaml.
MODEL_DEPLOYMENTS: dict[str, ModelDeployment] = {
    "Embedder": _embedder("realtime"),
    "BatchEmbedder": _embedder("batch"),
    "WhisperSTT": ModelDeployment(
        task="stt",
        deployment=stt.WhisperSTT,
        availability=lambda s, p: stt.WhisperEngine(
            s.speech.whisper, p, s.model_cache, s.data_dir).availability(),
        bind_args=lambda s, p: (s.speech.whisper, p, str(s.model_cache), str(s.data_dir)),
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
    for name, spec in app_args.deployments.items():
        if name == "Gateway":
            continue
        reason = _why_not(name, spec, settings, profile)
        if reason:
            unavailable[name] = reason
            log.warning("deployment %s not started: %s", name, reason)
            continue
        model = MODEL_DEPLOYMENTS[name]
        handles[name] = (
            model.deployment.options(name=name, **spec.ray_options())
            .bind(*model.bind_args(settings, profile), gpu_memory_gb=spec.gpu_memory_gb)
        )
    gateway_spec = app_args.deployments.get("Gateway", DeploymentSpec(max_ongoing_requests=200))
    tasks = {name: MODEL_DEPLOYMENTS[name].task for name in app_args.deployments if name in MODEL_DEPLOYMENTS}
    return Gateway.options(**gateway_spec.ray_options()).bind(settings, handles, unavailable, tasks)


def _why_not(name: str, spec: DeploymentSpec, settings: Settings, profile: str) -> str:
    if not spec.enabled:
        return "disabled in serve_config.yaml"
    if name not in MODEL_DEPLOYMENTS:
        return "no such deployment in this version of the code"
    avail = MODEL_DEPLOYMENTS[name].availability(settings, profile)
    return "" if avail.ok else avail.reason
