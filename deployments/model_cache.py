"""The local model cache: production weights live here, never fetched at run time.

Layout: ``<cache>/<org>/<name>/`` holds a model's files as its hub repository
has them. ``python -m deployments.model_cache fetch`` fills it on a machine
that can reach the hub; serving only ever reads it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

# Production weights by deployment. Kept here so the fetch command and the
# availability checks agree on what "present" means.
PRODUCTION_MODELS: dict[str, tuple[str, ...]] = {
    "Embedder": ("Qwen/Qwen3-Embedding-0.6B",),
    "BatchEmbedder": ("Qwen/Qwen3-Embedding-8B",),
    "WhisperSTT": ("openai/whisper-large-v3",),
    "KokoroTTS": ("hexgrad/Kokoro-82M",),
    "ChatterboxTTS": ("ResembleAI/chatterbox",),
    "GlinerNER": ("urchade/gliner_multi-v2.1",),
}

# A repository is present when its config file is (weights are checked by the loader).
_MARKERS = ("config.json", "modules.json", "gliner_config.json", "tokenizer.json")


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


def model_dir(cache: Path, repo_id: str) -> Path:
    return Path(cache).expanduser() / repo_id


def check(cache: Path, repo_id: str) -> Availability:
    """Whether ``repo_id`` is in the cache, and if not, what to run to fill it."""
    path = model_dir(cache, repo_id)
    if not path.is_dir():
        return Availability(
            False,
            f"weights for {repo_id} are not in the local model cache ({path}); "
            "fill it with `make models` on a machine that reaches the model hub",
        )
    if not any((path / m).exists() for m in _MARKERS) and not any(path.iterdir()):
        return Availability(False, f"model cache folder {path} is empty")
    return Availability(True)


def fetch(cache: Path, repo_ids: list[str]) -> None:
    """Download repositories into the cache (needs huggingface_hub and network)."""
    from huggingface_hub import snapshot_download

    for repo_id in repo_ids:
        target = model_dir(cache, repo_id)
        print(f"fetching {repo_id} -> {target}", flush=True)
        snapshot_download(repo_id=repo_id, local_dir=target)


def main(argv: list[str] | None = None) -> int:
    from deployments.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="what each deployment needs and whether it is present")
    f = sub.add_parser("fetch", help="download production weights into the cache")
    f.add_argument("deployments", nargs="*", help="default: all")
    args = parser.parse_args(argv)
    cache = Settings().model_cache
    if args.cmd == "list":
        for dep, repos in PRODUCTION_MODELS.items():
            for repo in repos:
                a = check(cache, repo)
                print(f"{dep:14} {repo:32} {'present' if a.ok else 'absent'}")
        return 0
    wanted = args.deployments or list(PRODUCTION_MODELS)
    unknown = [d for d in wanted if d not in PRODUCTION_MODELS]
    if unknown:
        print(f"unknown deployments: {unknown}; known: {list(PRODUCTION_MODELS)}")
        return 2
    fetch(cache, [r for d in wanted for r in PRODUCTION_MODELS[d]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
