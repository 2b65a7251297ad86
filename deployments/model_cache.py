"""The local model cache: production weights live here, never fetched at run time.

Each model's declaration (``deployments.registry``) names its weights and the
exact layout its engine reads (``Weights.path``). ``python -m
deployments.model_cache fetch`` fills the cache from those declarations on a
machine that can reach the hub (or from a mirror folder with ``--from``);
serving only ever reads it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Protocol

from deployments.declaration import Weights


class WeightSource(Protocol):
    def fetch(self, weights: Weights, target: Path) -> None:
        """Put ``weights`` at ``target`` (a folder for hub repos, a file for checkpoints)."""


class HubSource:
    """The model hub for repositories, openai-whisper's own URL table for its checkpoints."""

    def fetch(self, weights: Weights, target: Path) -> None:
        if weights.layout == "openai-whisper":
            import whisper

            # whisper names the file after its URL and checks the URL's sha256.
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                path = whisper._download(whisper._MODELS[weights.source], tmp, False)
                os.replace(path, target)
            return
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id=weights.source, local_dir=target)


class MirrorSource:
    """A folder laid out like the hub (``<org>/<name>/``), with openai-whisper's downloads
    under ``openai-whisper/`` as whisper names them: a copy carried to an offline node."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()

    def fetch(self, weights: Weights, target: Path) -> None:
        if weights.layout == "openai-whisper":
            import whisper

            name = os.path.basename(whisper._MODELS[weights.source])
            shutil.copyfile(self.root / "openai-whisper" / name, target)
            return
        shutil.copytree(self.root / weights.source, target, dirs_exist_ok=True)


def fetch(cache: Path, weights: list[Weights], source: WeightSource) -> list[Path]:
    """Fetch each of ``weights`` to the path its engine reads; the paths written."""
    written = []
    for w in dict.fromkeys(weights):
        target = w.path(cache)
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"fetching {w.source} -> {target}", flush=True)
        source.fetch(w, target)
        written.append(target)
    return written


def production_weights(settings) -> dict[str, tuple[Weights, ...]]:
    """Every declared model's production weights, by deployment name."""
    from deployments.registry import MODELS

    return {m.name: m.weights(settings) for m in MODELS if m.weights(settings)}


def main(argv: list[str] | None = None, source: WeightSource | None = None) -> int:
    from deployments.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="what each deployment needs and whether it is present")
    f = sub.add_parser("fetch", help="download production weights into the cache")
    f.add_argument("deployments", nargs="*", help="default: all")
    f.add_argument("--from", dest="mirror", type=Path,
                   help="copy from a folder laid out like the hub instead of downloading")
    args = parser.parse_args(argv)
    settings = Settings()
    cache = settings.model_cache
    declared = production_weights(settings)
    if args.cmd == "list":
        for dep, weights in declared.items():
            for w in weights:
                a = w.check(cache)
                print(f"{dep:14} {w.source:32} {'present' if a.ok else 'absent'}  {w.path(cache)}")
        return 0
    wanted = args.deployments or list(declared)
    unknown = [d for d in wanted if d not in declared]
    if unknown:
        print(f"unknown deployments: {unknown}; known: {list(declared)}")
        return 2
    source = source or (MirrorSource(args.mirror) if args.mirror else HubSource())
    fetch(cache, [w for d in wanted for w in declared[d]], source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
