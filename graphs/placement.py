"""Where each model can run, decided on the nodes themselves, not where build_app runs.

At build time a tiny Ray task pinned to each candidate host (``label_selector``
``{"host": h}``, no CPU reserved) runs the declarations' availability checks
there: that node's hardware, packages and model cache. A deployment is then
bound only to the hosts that have it; a host that did not answer (node not up
yet) is kept, and the replica there checks again when it starts (it then
reports itself unavailable and refuses calls, see ``ModelReplica``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from deployments.declaration import Availability
from deployments.settings import Settings
from graphs.topology import DeploymentSpec

log = logging.getLogger("ray.serve")

PROBE_TIMEOUT_S = 30.0
NOT_PROBED = "not checked: the node did not answer (it checks again when its replica starts)"


@dataclass(frozen=True)
class NodeViews:
    """Per deployment, per host: "available", or why not, or NOT_PROBED."""

    views: dict[str, dict[str, str]]

    def of(self, deployment: str) -> dict[str, str]:
        return self.views.get(deployment, {})


def check_here(names: list[str], settings: Settings, profile: str) -> dict[str, str]:
    """Run on a node: each named model's availability there ("available" or the reason)."""
    from deployments.registry import BY_NAME

    out = {}
    for m in (BY_NAME[n] for n in names):
        try:
            avail = m.availability(settings.on_this_node(), profile)
        except Exception as exc:  # e.g. profile gpu on a node without CUDA
            avail = Availability(False, str(exc))
        out[m.name] = "available" if avail.ok else avail.reason
    return out


def probe_nodes(
    wanted: dict[str, list[str]], settings: Settings, profile: str,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> NodeViews:
    """``wanted``: model deployment -> its candidate hosts. One task per host."""
    import ray

    check = ray.remote(num_cpus=0, max_retries=0)(check_here)
    by_host: dict[str, list[str]] = {}
    for name, hosts in wanted.items():
        for h in hosts:
            by_host.setdefault(h, []).append(name)
    refs = {h: check.options(label_selector={"host": h}).remote(names, settings, profile)
            for h, names in by_host.items()}
    ready, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    answers: dict[str, dict[str, str]] = {}
    for h, ref in refs.items():
        if ref in ready:
            try:
                answers[h] = ray.get(ref)
            except Exception as exc:
                log.warning("availability check on %s failed: %s", h, exc)
        else:
            ray.cancel(ref, force=True)
    views = {name: {h: answers.get(h, {}).get(name, NOT_PROBED) for h in hosts}
             for name, hosts in wanted.items()}
    return NodeViews(with_fallback(views, settings, profile))


def with_fallback(views: dict[str, dict[str, str]], settings: Settings,
                  profile: str) -> dict[str, dict[str, str]]:
    """Where no host answered for a model, the check where the app is built decides whether
    it is absent: never start a deployment (nor its runtime_env install) on no evidence."""
    unknown = [name for name, view in views.items()
               if view and all(v == NOT_PROBED for v in view.values())]
    here = check_here(unknown, settings, profile) if unknown else {}
    for name, found in here.items():
        if found != "available":
            views[name] = {h: f"{found} (no node answered; checked where the app was built)"
                           for h in views[name]}
    return views


def narrowed(spec: DeploymentSpec, view: dict[str, str]) -> DeploymentSpec:
    """``spec`` bound only to the hosts that have the model, or did not answer."""
    keep = [h for h in view if view[h] in ("available", NOT_PROBED)]
    if keep == list(view):
        return spec
    update: dict = {"hosts": keep}
    if len(keep) < 2:
        update["routing"] = "default"
    if spec.max_replicas_per_node:
        update["num_replicas"] = min(spec.num_replicas, spec.max_replicas_per_node * len(keep))
    return spec.model_copy(update=update)


def why_nowhere(view: dict[str, str]) -> str:
    """The reason to give when no host has the model ("" when one has or may have)."""
    if not view or any(v in ("available", NOT_PROBED) for v in view.values()):
        return ""
    reasons = set(view.values())
    if len(reasons) == 1:
        return reasons.pop()
    return "; ".join(f"{h}: {r}" for h, r in view.items())
