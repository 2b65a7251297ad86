"""GET /v1/status: nodes, deployments, replicas and the GPU budget, as the cluster runs now.

Everything comes from live sources (Ray's node table, Serve's status, each
replica's ``info()``), next to what ``serve_config.yaml`` declares and what the
capacity planner (``cluster.capacity.plan``) allows per node.
"""

from __future__ import annotations

import asyncio
import functools

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle
from fastapi import APIRouter, Request

from cluster.capacity import plan
from cluster.nodes import Node
from deployments.results import ReplicaInfo
from graphs.schemas import (
    BudgetRow,
    ClusterStatus,
    DeploymentStatus,
    NodeBudget,
    NodeStatus,
)
from graphs.http import EdgeRoute
from graphs.placement import NOT_PROBED
from graphs.services import ServicesDep
from graphs.topology import AppArgs


router = APIRouter(route_class=EdgeRoute, tags=["status"])


def _value(x: object) -> str:
    """Serve's status enums as their plain names."""
    return str(getattr(x, "value", x))


def node_status(ray_nodes: list[dict]) -> list[NodeStatus]:
    """``ray.nodes()`` rows as NodeStatus, live nodes first."""
    out = [
        NodeStatus(
            host=n.get("Labels", {}).get("host", n["NodeManagerHostname"]),
            node_id=n["NodeID"],
            alive=n["Alive"],
            address=n["NodeManagerAddress"],
            labels=n.get("Labels", {}),
            gpus=n.get("Resources", {}).get("GPU", 0.0),
        )
        for n in ray_nodes
    ]
    return sorted(out, key=lambda n: (not n.alive, n.host))


def deployment_status(
    app_status: object,
    replica_info: dict[str, list[ReplicaInfo]],
    topology: AppArgs,
    unavailable: dict[str, str],
    node_views: dict[str, dict[str, str]],
) -> list[DeploymentStatus]:
    """Every deployment the config names or Serve runs, with its live replicas."""
    running = getattr(app_status, "deployments", {}) or {}
    out = []
    for name in dict.fromkeys([*topology.deployments, *running]):
        spec = topology.deployments.get(name)
        live = running.get(name)
        out.append(
            DeploymentStatus(
                name=name,
                status=_value(live.status) if live else "NOT_STARTED",
                message=(live.message if live else "") or unavailable.get(name, ""),
                replica_states={_value(k): v for k, v in (live.replica_states if live else {}).items()},
                replicas=list(replica_info.get(name, [])),
                num_gpus=spec.num_gpus if spec else 0.0,
                gpu_memory_gb=spec.gpu_memory_gb if spec else 0.0,
                hosts=spec.hosts if spec else [],
                nodes=node_views.get(name, {}),
            )
        )
    return out


def budget(
    topology: AppArgs, nodes: dict[str, Node], deployments: list[DeploymentStatus]
) -> list[NodeBudget]:
    """The planner's worst case per node and deployment, next to the replicas running there."""
    by_name = {d.name: d for d in deployments}
    out = []
    for load in plan(topology, nodes):
        node = load.node
        host = node.labels.get("host", node.name)
        rows = []
        for dep, replicas, gpus, memory in load.rows:
            here = [
                r for r in (by_name[dep].replicas if dep in by_name else [])
                if r.host == host and r.error is None and r.available
            ]
            view = by_name[dep].nodes.get(host, "available") if dep in by_name else "available"
            spec = topology.deployments[dep]
            measured = [r.gpu_memory_used_gb for r in here if r.gpu_memory_used_gb is not None]
            rows.append(
                BudgetRow(
                    deployment=dep,
                    planned_replicas=replicas,
                    planned_gpus=gpus,
                    planned_memory_gb=memory,
                    running_replicas=len(here),
                    running_gpus=len(here) * spec.num_gpus,
                    running_memory_gb=len(here) * spec.gpu_memory_gb,
                    used_memory_gb=sum(measured) if measured else None,
                    available=view in ("available", NOT_PROBED),
                    reason=None if view == "available" else view,
                )
            )
        out.append(
            NodeBudget(
                node=node.name,
                host=host,
                gpus=node.gpus,
                gpu_memory_gb=node.gpu_memory_gb,
                free_gpu_memory_gb=node.free_gpu_memory_gb,
                rows=rows,
                problems=load.problems(),
            )
        )
    return out


@functools.cache
def own_handle(deployment: str, app_name: str) -> DeploymentHandle:
    """The gateway's own handle (to ask every gateway replica where it runs), made once."""
    return serve.get_deployment_handle(deployment, app_name)


@router.get("/v1/status", response_model=ClusterStatus)
async def status(request: Request, services: ServicesDep) -> ClusterStatus:
    ctx = serve.get_replica_context()
    topology: AppArgs = request.app.state.topology
    nodes: dict[str, Node] = request.app.state.nodes
    gateway = own_handle(ctx.deployment, ctx.app_name)
    serve_status, ray_nodes, info, gateway_info = await asyncio.gather(
        asyncio.to_thread(serve.status),
        asyncio.to_thread(ray.nodes),
        services.replica_info(max_age_s=0),
        gateway.broadcast("info").results_async(timeout_s=5),
    )
    info = {**info, ctx.deployment: list(gateway_info)}
    app_status = serve_status.applications.get(ctx.app_name)
    deployments = deployment_status(app_status, info, topology, services.unavailable,
                                    services.node_views())
    return ClusterStatus(
        application=ctx.app_name,
        app_status=_value(app_status.status) if app_status else "NOT_STARTED",
        nodes=node_status(ray_nodes),
        deployments=deployments,
        budget=budget(topology, nodes, deployments),
    )
