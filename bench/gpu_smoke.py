"""GPU smoke: every declared GPU engine's code path on CUDA, without Ray, in one call.

    python bench/gpu_smoke.py            # on a GPU machine (torch + CuPy; Ray not needed)
    python bench/gpu_smoke.py --size production   # the production models' dimensions
    python bench/gpu_smoke.py --device cpu   # the same code paths on CPU

The list comes from the model declarations (what ``deployments/registry.py`` finds): each
declared model's code path (``bench.codepath.CODE_PATHS``) runs with random
weights from a small config (or the production dimensions, ``--size production``),
under the GPU memory cap serve_config.yaml declares for it
(``deployments.runtime.cap_gpu_memory``). One line per model: name, result,
time (build and first call), GPU memory resident once built, the peak while
serving against the cap (applied once the model is built: the random build is
not how production loads weights), the warm call's time, or why it was skipped.

Ray is not imported. The declarations are found in the modules' source (as
the registry finds them, without importing), and where Ray is not installed a stand-in
lets the model modules import: ``@serve.deployment`` and ``@serve.batch``
leave the classes as they are and metrics do nothing. Only engines run here;
nothing is served. spaCy, which Kokoro's package imports for a G2P that the
KModel backend never uses (it phonemizes with espeak-ng), is stood in for
where it is not installed, so the GPU machine needs no 35 MB wheel for it.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENTS = REPO / "deployments"
MIB = 1024**2


def declared_models() -> list[tuple[str, str]]:
    """(module, declaration constant) of every model, in the registry's order (its modules by
    name, then as written), found in the source: each ``NAME = ModelDeclaration(...)``."""
    found = []
    for path in sorted(DEPLOYMENTS.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            value = getattr(node, "value", None)
            if (isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(value, ast.Call)
                    and getattr(value.func, "id", "") == "ModelDeclaration"):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                found.append((f"deployments.{path.stem}", target.id))
    return found


def without_ray() -> None:
    """Install the stand-in for the parts of Ray the model modules touch at import."""
    if importlib.util.find_spec("ray") is not None and sys.modules.get("ray", True) is not None:
        return

    class Metric:
        def __init__(self, *args, **kwargs):
            pass

        def inc(self, *args, **kwargs):
            pass

        observe = set = inc

    def deployment(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda cls: cls

    def batch(*args, **kwargs):
        return deployment(*args, **kwargs)

    ray = types.ModuleType("ray")
    serve = types.ModuleType("ray.serve")
    serve.deployment, serve.batch = deployment, batch
    metrics = types.ModuleType("ray.serve.metrics")
    metrics.Counter = metrics.Gauge = metrics.Histogram = Metric
    ray.serve, serve.metrics = serve, metrics
    sys.modules.update({"ray": ray, "ray.serve": serve, "ray.serve.metrics": metrics})


def without_spacy() -> None:
    """An empty ``spacy`` for ``misaki.en``'s import where spaCy is not installed; any use of
    it fails (AttributeError), and no GPU code path uses it."""
    if importlib.util.find_spec("spacy") is None:
        sys.modules["spacy"] = types.ModuleType("spacy")


def declared_gpu_memory() -> dict[str, float]:
    """gpu_memory_gb per deployment from serve_config.yaml (0 where none is declared)."""
    import yaml

    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    app = next(a for a in config["applications"] if a["name"] == "assistant")
    return {n: float(s.get("gpu_memory_gb", 0)) for n, s in app["args"]["deployments"].items()}


def cuda_ready() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def run_one(name: str, code_path, device: str, cap_gb: float, size: str,
            apply_cap: bool = True) -> str:
    """Run one code path; its report line."""
    torch = sys.modules.get("torch")
    on_cuda = device == "cuda"
    resident = 0

    def built() -> None:
        """The model is built: from here its cap holds and its peak counts, so the random
        build (not how production loads weights) stays out of the serving peak."""
        nonlocal resident
        if on_cuda:
            from deployments.runtime import cap_gpu_memory

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            resident = torch.cuda.memory_allocated()
            if apply_cap:
                cap_gpu_memory(cap_gb)
            torch.cuda.reset_peak_memory_stats()

    if on_cuda:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)  # the previous model's cap
        torch.cuda.empty_cache()
    start = time.perf_counter()
    try:
        note = code_path(device, size, built)
    except ImportError as exc:
        return f"{name:14} skip  {exc.name or exc} not installed"
    except Exception as exc:
        detail = traceback.format_exception_only(exc)[-1].strip()
        return f"{name:14} FAIL  {detail}"
    seconds = time.perf_counter() - start
    if not on_cuda:
        return f"{name:14} ok    {seconds:6.2f} s  {note}"
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / MIB
    within = "within" if cap_gb <= 0 or peak <= cap_gb * 1024 else "OVER"
    applied = "" if apply_cap else "not applied, "
    return (f"{name:14} ok    {seconds:6.2f} s  weights {resident / MIB:8.1f} MiB  "
            f"peak {peak:8.1f} MiB  cap {cap_gb:g} GiB ({applied}{within})  {note}")


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from bench.codepath import SIZES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--size", choices=SIZES, default="small",
                        help="model dimensions: small configs, or the production models' own")
    parser.add_argument("--no-cap", action="store_true",
                        help="measure each peak without applying its cap (to size gpu_memory_gb)")
    parser.add_argument("--only", nargs="*", help="deployment names (default: every declared one)")
    args = parser.parse_args(argv)
    without_ray()
    without_spacy()
    from bench.codepath import CODE_PATHS, NOT_SMOKED

    caps = declared_gpu_memory()
    if args.device == "cuda" and not cuda_ready():
        print("no CUDA device: every GPU code path skipped (--device cpu runs them on CPU)")
    failed = 0
    for module, constant in declared_models():
        try:
            name = getattr(importlib.import_module(module), constant).name
        except ImportError as exc:
            print(f"{constant:14} skip  {module} needs {exc.name}, not installed")
            continue
        if args.only and name not in args.only:
            continue
        if name in NOT_SMOKED:
            print(f"{name:14} skip  {NOT_SMOKED[name]}")
            continue
        if name not in CODE_PATHS:
            print(f"{name:14} FAIL  declared, but bench.codepath has no code path for it")
            failed += 1
            continue
        if args.device == "cuda" and not cuda_ready():
            print(f"{name:14} skip  no CUDA device")
            continue
        line = run_one(name, CODE_PATHS[name], args.device, caps.get(name, 0.0), args.size,
                       not args.no_cap)
        failed += " FAIL " in line
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
