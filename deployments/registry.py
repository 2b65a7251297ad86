"""Every model deployment's declaration, in one list: the rest of the code derives from it.

The list is found, not written: every module of this package that defines a
``ModelDeclaration`` at module level is in it. Adding a model is its module
(engine, deployment, declaration) plus its entry in ``serve_config.yaml``.
"""

from __future__ import annotations

import importlib
import pkgutil

import deployments
from deployments.declaration import ModelDeclaration


def discover() -> tuple[ModelDeclaration, ...]:
    """Module-level declarations of this package's modules, by module name, then as written
    (one a module imports from another is counted once)."""
    found: dict[str, ModelDeclaration] = {}
    for info in sorted(pkgutil.iter_modules(deployments.__path__), key=lambda i: i.name):
        if info.ispkg or info.name == "registry":
            continue
        module = importlib.import_module(f"deployments.{info.name}")
        for value in vars(module).values():
            if isinstance(value, ModelDeclaration):
                found.setdefault(value.name, value)
    return tuple(found.values())


MODELS: tuple[ModelDeclaration, ...] = discover()
BY_NAME: dict[str, ModelDeclaration] = {m.name: m for m in MODELS}


def of_task(task: str) -> tuple[ModelDeclaration, ...]:
    return tuple(m for m in MODELS if m.task == task)
