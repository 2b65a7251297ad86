"""Named-entity recognition with GLiNER: any labels, chosen per request.

``NerEngine`` is plain Python; ``GlinerNER`` adds dynamic batching across
requests that share labels and threshold. Weights come only from the local
model cache; without them the deployment is not started and /health says why.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ray import serve

from deployments.declaration import Availability, ModelDeclaration, Weights
from deployments.profile import resolve_profile
from deployments.results import EngineInfo, EntitySpan
from deployments.runtime import ModelReplica
from deployments.settings import NerSettings

GLINER_BATCH = 8


class NerEngine:
    def __init__(self, settings: NerSettings, cache: Path, profile: str = "auto"):
        self.settings = settings
        self.cache = Path(cache)
        self.profile = resolve_profile(profile)
        self.model = None

    def availability(self) -> Availability:
        try:
            import gliner  # noqa: F401
        except ImportError:
            return Availability(False, "gliner is not installed (pip install '.[ner]')")
        return gliner_weights(self.settings).check(self.cache)

    def load(self) -> None:
        avail = self.availability()
        if not avail.ok:
            raise RuntimeError(avail.reason)
        from gliner import GLiNER

        self.model = GLiNER.from_pretrained(
            str(self.weights_path),
            local_files_only=True,
            map_location="cuda" if self.profile == "gpu" else "cpu",
        )
        self.model.eval()

    @property
    def weights_path(self) -> Path:
        """The folder ``GLiNER.from_pretrained`` loads."""
        return gliner_weights(self.settings).path(self.cache)

    def check(self, texts: list[str], labels: list[str], threshold: float) -> None:
        """Raise ValueError for a request this engine refuses."""
        if not labels or len(labels) > self.settings.max_labels:
            raise ValueError(f"labels must hold 1 to {self.settings.max_labels} names")
        if any(not label.strip() for label in labels):
            raise ValueError("labels must not be empty strings")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if any(len(t) > self.settings.max_text_chars for t in texts):
            raise ValueError(f"a text is longer than {self.settings.max_text_chars} characters")

    def predict(self, texts: list[str], labels: list[str], threshold: float) -> list[list[EntitySpan]]:
        """Per text: its entity spans (character offsets)."""
        if self.model is None:
            raise RuntimeError("NerEngine.load() has not been called")
        self.check(texts, labels, threshold)
        out = self.model.inference(
            texts, labels, threshold=threshold, flat_ner=True, batch_size=GLINER_BATCH
        )
        return [
            [
                EntitySpan(e["text"], e["label"], float(e["score"]), int(e["start"]), int(e["end"]))
                for e in spans
            ]
            for spans in out
        ]

    def info(self) -> EngineInfo:
        return EngineInfo(model=self.settings.model, backend="GLiNER",
                          device="cuda" if self.profile == "gpu" else "cpu")

    def probe(self) -> None:
        self.predict(["Ada Lovelace lived in London."], ["person"], 0.5)


def gliner_weights(settings: NerSettings) -> Weights:
    """GLiNER's config and weights, as ``GLiNER.from_pretrained`` reads a local folder."""
    return Weights(settings.model, files=("gliner_config.json", "pytorch_model.bin"))


@serve.deployment(max_ongoing_requests=64)
class GlinerNER(ModelReplica):
    """Serves one NerEngine; batches concurrent requests with the same labels and threshold."""

    def configure(self, user_config: dict) -> None:
        self._batch.set_max_batch_size(int(user_config.get("max_batch_size", 16)))
        self._batch.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.01)))

    async def predict(
        self, texts: list[str], labels: list[str], threshold: float
    ) -> list[list[EntitySpan]]:
        self.engine.check(texts, labels, threshold)
        return await self._batch((texts, tuple(labels), threshold))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batch(self, requests: list[tuple]) -> list[list[list[EntitySpan]]]:
        return await asyncio.to_thread(self._predict_many, requests)

    def _predict_many(self, requests: list[tuple]) -> list[list[list[EntitySpan]]]:
        """One inference call per (labels, threshold) group, split back per request."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, labels, threshold) in enumerate(requests):
            groups.setdefault((labels, threshold), []).append(i)
        results: list = [None] * len(requests)
        for (labels, threshold), members in groups.items():
            merged = self.engine.predict(
                [t for i in members for t in requests[i][0]], list(labels), threshold
            )
            start = 0
            for i in members:
                n = len(requests[i][0])
                results[i] = merged[start : start + n]
                start += n
        return results


NER = ModelDeclaration(
    name="GlinerNER", task="ner", deployment=GlinerNER,
    section=lambda s: s.ner,
    engine=lambda s, profile: NerEngine(s.ner, s.model_cache, profile),
    weights=lambda s: (gliner_weights(s.ner),),
)
