"""``build_app``: the Serve application named in ``serve_config.yaml``.

Reads the topology from the app's args and the machine settings from the
environment, asks each candidate node whether it can run each model
(``graphs.placement``), binds every enabled deployment to the nodes that can,
and tells the gateway why the others are not running, per node. What each deployment is
comes from its declaration (``deployments.registry`` for models, ``GRAPHS``
here for compositions); nothing about a model is written here.
"""

from __future__ import annotations

import logging

from ray.serve import Application

from cluster.nodes import load_nodes
from deployments.declaration import GraphDeclaration, ModelDeclaration
from deployments.registry import MODELS, of_task
from deployments.settings import Settings
from graphs.gateway import Gateway
from graphs.ingest import INGEST
from graphs.placement import NodeViews, narrowed, probe_nodes, why_nowhere
from graphs.retrieval import RETRIEVAL
from graphs.topology import AppArgs, DeploymentSpec
from graphs.voice import VOICE

log = logging.getLogger("ray.serve")

GRAPHS: tuple[GraphDeclaration, ...] = (RETRIEVAL, INGEST, VOICE)
DECLARATIONS: dict[str, ModelDeclaration | GraphDeclaration] = {
    d.name: d for d in (*MODELS, *GRAPHS)
}


def build_app(args: dict) -> Application:
    """Serve's app builder: ``import_path: graphs.app:build_app``."""
    app_args = AppArgs.model_validate(args or {})
    settings = Settings()
    # Resolved by each replica on its own node (auto: gpu where CUDA is, else cpu).
    profile = app_args.profile if app_args.profile != "auto" else settings.profile
    views = _node_views(app_args, settings, profile)
    handles, unavailable = {}, {}
    # Models first, then the graphs that compose them.
    for name, spec in sorted(app_args.deployments.items(), key=lambda kv: _depth(kv[0])):
        if name == "Gateway":
            continue
        reason = (_why_not(name, spec, views.of(name))
                  or _missing(name, handles, unavailable))
        if reason:
            unavailable[name] = reason
            log.warning("deployment %s not started: %s", name, reason)
            continue
        declared = DECLARATIONS[name]
        if isinstance(declared, ModelDeclaration):
            spec = narrowed(spec, views.of(name))
            bind_args = (declared.engine, settings, profile)
            kwargs = {"gpu_memory_gb": spec.gpu_memory_gb}
        else:
            bind_args = declared.bind_args(settings)
            kwargs = _composed(declared, handles, unavailable)
        handles[name] = (
            declared.deployment.options(name=name, **spec.ray_options()).bind(*bind_args, **kwargs)
        )
    gateway_spec = app_args.deployments.get("Gateway", DeploymentSpec(max_ongoing_requests=200))
    tasks = {name: DECLARATIONS[name].task for name in app_args.deployments if name in DECLARATIONS}
    return Gateway.options(**gateway_spec.ray_options()).bind(
        settings, handles, unavailable, tasks, app_args, load_nodes(), views.views
    )


def _node_views(app_args: AppArgs, settings: Settings, profile: str) -> NodeViews:
    """Each enabled model's availability on each of its candidate hosts, asked of the hosts."""
    import ray

    hosts_up = sorted({n.get("Labels", {}).get("host", n["NodeManagerHostname"])
                       for n in ray.nodes() if n["Alive"]})
    wanted = {
        name: spec.hosts or hosts_up
        for name, spec in app_args.deployments.items()
        if spec.enabled and isinstance(DECLARATIONS.get(name), ModelDeclaration)
    }
    return probe_nodes(wanted, settings, profile)


def _composed(graph: GraphDeclaration, handles: dict, unavailable: dict) -> dict:
    """The handles a graph's constructor gets, and why the optional ones are absent."""
    kwargs = {arg: handles[dep] for arg, dep in graph.uses.items()}
    for arg, dep in graph.optional.items():
        kwargs[arg] = handles.get(dep)
        kwargs[f"{arg}_unavailable"] = unavailable.get(dep, "not part of this application")
    for arg, task in graph.by_task.items():
        models = of_task(task)
        kwargs[arg] = {m.public_name: handles[m.name] for m in models if m.name in handles}
        kwargs[f"{arg}_unavailable"] = {
            m.public_name: unavailable.get(m.name, "not part of this application")
            for m in models if m.name not in handles
        }
    return kwargs


def _dependencies(name: str) -> list[str]:
    declared = DECLARATIONS.get(name)
    if not isinstance(declared, GraphDeclaration):
        return []
    by_task = [m.name for task in declared.by_task.values() for m in of_task(task)]
    return [*declared.uses.values(), *declared.optional.values(), *by_task]


def _depth(name: str) -> int:
    """0 for models, 1 + the deepest dependency for graphs: bind order, dependencies first."""
    deps = _dependencies(name)
    return 1 + max(map(_depth, deps)) if deps else 0


def _missing(name: str, handles: dict, unavailable: dict) -> str:
    declared = DECLARATIONS[name]
    needed = [dep for dep in getattr(declared, "uses", {}).values() if dep not in handles]
    return "; ".join(f"needs {dep}: {unavailable.get(dep, 'not configured')}" for dep in needed)


def _why_not(name: str, spec: DeploymentSpec, view: dict[str, str]) -> str:
    if not spec.enabled:
        return "disabled in serve_config.yaml"
    if name not in DECLARATIONS:
        return "no such deployment in this version of the code"
    return why_nowhere(view)
