"""What a model or graph deployment is, declared once in its own module.

Every other place that needs to know about a deployment (the app builder,
``make models``, ``/v1/models``, the speech and voice tables, the GPU smoke)
reads these declarations instead of keeping its own list. Ray-free: the
fetch command and the planner import it on machines without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from deployments.settings import Settings


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


AVAILABLE = Availability(True)


@dataclass(frozen=True)
class Weights:
    """Production weights one engine reads from the local model cache.

    ``layout`` says how they are fetched and where they land:
    ``hub``: the hub repository ``source`` as a folder ``<cache>/<org>/<name>/``;
    ``openai-whisper``: the checkpoint openai-whisper downloads from its own URL
    table (``whisper._MODELS[source]``), as ``<cache>/openai-whisper/<source>.pt``.
    ``files`` are the patterns the engine reads; all must match for the weights
    to count as present.
    """

    source: str
    layout: Literal["hub", "openai-whisper"] = "hub"
    files: tuple[str, ...] = ()

    def path(self, cache: Path) -> Path:
        cache = Path(cache).expanduser()
        if self.layout == "openai-whisper":
            return cache / "openai-whisper" / f"{self.source}.pt"
        return cache / self.source

    def check(self, cache: Path) -> Availability:
        """Present, or what is missing and how to fill the cache."""
        path = self.path(cache)
        fill = "fill it with `make models` on a machine that reaches the model hub"
        if not path.exists():
            return Availability(False, f"weights {self.source} are not in the local model cache "
                                       f"({path}); {fill}")
        missing = [p for p in self.files if not any(path.glob(p))]
        if missing:
            return Availability(False, f"weights {self.source} in {path} lack {missing}; {fill}")
        return AVAILABLE


def no_weights(_: "Settings") -> tuple[Weights, ...]:
    return ()


@dataclass(frozen=True)
class ModelDeclaration:
    """One model deployment: everything the rest of the code may know about it."""

    name: str
    """Deployment name, as in serve_config.yaml."""
    task: str
    """embeddings, stt, tts, ner, vector-index, graph-index..."""
    deployment: Any
    """The ``@serve.deployment`` class; its decorator holds the defaults
    (max_ongoing_requests...) that serve_config.yaml may override."""
    section: Callable[["Settings"], Any]
    """Its settings section (``SERVE_<SECTION>__...``)."""
    engine: Callable[["Settings", str], Any]
    """(settings, profile) -> its engine, not loaded yet. The replica builds it on its node."""
    weights: Callable[["Settings"], tuple[Weights, ...]] = no_weights
    """Production weights (GPU profile) in the local model cache; ``make models`` fetches them."""
    public_name: str = ""
    """The short model name clients use where they pick an engine (``kokoro``)."""
    aliases: tuple[str, ...] = ()
    """Other model names that mean this deployment (OpenAI's ``tts-1``)."""

    def availability(self, settings: "Settings", profile: str) -> Availability:
        """Whether it can run here (packages and weights), checked on the node that runs it."""
        return self.engine(settings, profile).availability()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.public_name, *self.aliases) if n)


@dataclass(frozen=True)
class GraphDeclaration:
    """A graph deployment: no model of its own, it composes other deployments' handles."""

    name: str
    task: str
    deployment: Any
    bind_args: Callable[["Settings"], tuple] = lambda _: ()
    uses: dict[str, str] = field(default_factory=dict)
    """Constructor argument -> deployment whose handle it gets; it must be running."""
    optional: dict[str, str] = field(default_factory=dict)
    """Like ``uses``, but None (and ``<arg>_unavailable``: why) when not running."""
    by_task: dict[str, str] = field(default_factory=dict)
    """Constructor argument -> task: a dict of every running deployment of that task, by
    its public name (and ``<arg>_unavailable``: why each absent one is absent)."""
