"""The topology part of ``serve_config.yaml``: how much of what runs where.

Lives in the application's ``args`` (not Serve's ``deployments:`` overrides)
because Serve rejects overrides for deployments an app does not bind, and a
deployment whose weights are absent is not bound. Ray-free: the capacity
planner reads it too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.settings import Profile


class DeploymentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """False: planned but not built yet, or switched off; never started."""
    num_replicas: int = Field(default=1, ge=1)
    max_replicas_per_node: int | None = Field(default=None, ge=1)
    num_cpus: float = Field(default=0.25, ge=0)
    num_gpus: float = Field(default=0.0, ge=0, le=1)
    """Fractional GPU reservation (bookkeeping in Ray; the replica caps its own memory)."""
    gpu_memory_gb: float = Field(default=0.0, ge=0)
    """Declared GPU memory per replica: the planner sums it, the replica caps itself to it."""
    hosts: list[str] = Field(default_factory=list)
    """Nodes (``host`` label) it may run on, most preferred first. Empty: any node."""
    routing: Literal["default", "preferred_host"] = "default"
    """preferred_host: send traffic to the replica on the first live host in ``hosts``
    (deployments.routing.PreferredHostRouter); default: Serve's own router."""
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    """None: the deployment's own default (its ``@serve.deployment`` decorator)."""
    max_queued_requests: int = -1
    health_check_period_s: float = 2.0
    health_check_timeout_s: float = 10.0
    user_config: dict[str, Any] = Field(default_factory=dict)
    runtime_env: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "DeploymentSpec":
        if self.num_gpus > 0 and self.gpu_memory_gb <= 0:
            raise ValueError("a deployment that reserves a GPU must declare gpu_memory_gb")
        if self.routing == "preferred_host" and len(self.hosts) < 2:
            raise ValueError("routing preferred_host needs at least two hosts, in preference order")
        return self

    def replicas_on(self, host: str, all_hosts: list[str], planned: bool = False) -> int:
        """The most replicas that could ever run on ``host`` (failover included).

        ``planned`` counts disabled deployments too: the whole intended topology.
        """
        if not (self.enabled or planned) or host not in (self.hosts or all_hosts):
            return 0
        return min(self.num_replicas, self.max_replicas_per_node or self.num_replicas)

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if len(self.hosts) == 1 or (self.hosts and self.num_replicas == 1):
            # One home; the rest are Ray label fallbacks in preference order.
            actor["label_selector"] = {"host": self.hosts[0]}
            if len(self.hosts) > 1:
                actor["fallback_strategy"] = [
                    {"label_selector": {"host": h}} for h in self.hosts[1:]
                ]
        elif self.hosts:
            actor["label_selector"] = {"host": f"in({','.join(self.hosts)})"}
        if self.runtime_env:
            actor["runtime_env"] = self.runtime_env
        options: dict[str, Any] = {
            "num_replicas": self.num_replicas,
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "ray_actor_options": actor,
        }
        if self.user_config or self.gpu_memory_gb:
            # The replica reads its memory cap from here (reconfigure()).
            options["user_config"] = {**self.user_config, "gpu_memory_gb": self.gpu_memory_gb}
        if self.max_ongoing_requests is not None:
            options["max_ongoing_requests"] = self.max_ongoing_requests
        if self.max_replicas_per_node:
            options["max_replicas_per_node"] = self.max_replicas_per_node
        if self.routing == "preferred_host":
            options["request_router_config"] = {
                "request_router_class": "deployments.routing.PreferredHostRouter",
                "request_router_kwargs": {"hosts": self.hosts},
            }
        return options


class AppArgs(BaseModel):
    """The ``args`` of the ``assistant`` application in ``serve_config.yaml``."""

    model_config = ConfigDict(extra="forbid")

    profile: Profile = "auto"
    deployments: dict[str, DeploymentSpec] = Field(default_factory=dict)


def load_app_args(config: dict, app_name: str = "assistant") -> AppArgs:
    """Pull one application's args out of a parsed ``serve_config.yaml``."""
    for app in config.get("applications", []):
        if app.get("name") == app_name:
            return AppArgs.model_validate(app.get("args") or {})
    raise KeyError(f"no application named {app_name!r} in the Serve config")
