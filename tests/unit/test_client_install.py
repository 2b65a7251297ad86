"""The client and CLI are light: the base install and `import clients` carry no server stack.

The phone daemon installs ``her-serve`` without extras and imports ``clients``;
torch, Ray, transformers and numpy are the server's (the ``server`` extra).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

HEAVY = {"torch", "ray", "numpy", "transformers"}
SERVER_PACKAGES = {"graphs", "deployments", "cluster", "bench"}
SHARED_FROM_SERVER = {"deployments", "deployments.results"}
"""The one server module the client may load: the Ray-free contracts api.schemas reuses."""
CLIENT_MODULES = ["clients", "clients.cli", "topology.capacity"]
"""What the light install imports: the client, the CLI, and the planner its ``capacity`` reads."""
OPTIONAL_IMPORTS = {"click"}
"""Imported only when installed: httpx tries click for its own command line and does without."""


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def imported_by_client() -> set[str]:
    """Modules that importing the client pulls in, in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"
        f"for name in {CLIENT_MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements install, transitively, with the extras they ask for."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            subs = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: counted, its own requirements unknown
        for sub in map(Requirement, subs):
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return seen


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_importing_the_client_and_cli_pulls_no_server_stack():
    modules = imported_by_client()
    assert {"clients", "api", "typer", "httpx"} <= top_level(modules)  # the check saw them
    assert not top_level(modules) & HEAVY
    server = {m for m in modules if m.split(".")[0] in SERVER_PACKAGES}
    assert server <= SHARED_FROM_SERVER


def test_the_base_install_excludes_the_server_stack_even_transitively():
    project = pyproject()["project"]
    base = closure(project["dependencies"])
    assert not base & HEAVY
    # the server extra is where they went
    assert HEAVY <= closure(project["optional-dependencies"]["server"])


def test_the_base_install_covers_what_the_client_imports():
    """A module the client imports from a distribution the base install lacks would break
    the phone daemon's install, though this machine (which has everything) would not notice."""
    project = pyproject()["project"]
    installed = closure(project["dependencies"]) | {canonicalize_name(project["name"])}
    owners = metadata.packages_distributions()
    missing = {
        module: owners[module]
        for module in top_level(imported_by_client()) - OPTIONAL_IMPORTS
        if module in owners and not {canonicalize_name(d) for d in owners[module]} & installed
    }
    assert not missing, f"imported by the client but not in the base dependencies: {missing}"


def test_the_client_packages_are_installed_by_the_base_install():
    packages = set(pyproject()["tool"]["setuptools"]["packages"])
    assert {"clients", "api", "topology"} <= packages
    assert "*.yaml" in pyproject()["tool"]["setuptools"]["package-data"]["topology"]
