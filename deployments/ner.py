"""Named-entity recognition with GLiNER: any labels, chosen per request.

``NerEngine`` is plain Python; ``GlinerNER`` adds dynamic batching across
requests that share labels and threshold. Weights come only from the local
model cache; without them the deployment is not started and /health says why.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ray import serve

from deployments import model_cache
from deployments.profile import resolve_profile
from deployments.runtime import ModelReplica
from deployments.settings import NerSettings

GLINER_BATCH = 8


class NerEngine:
    def __init__(self, settings: NerSettings, cache: Path, profile: str = "auto"):
        self.settings = settings
        self.cache = Path(cache)
        self.profile = resolve_profile(profile)
        self.model = None

    def availability(self) -> model_cache.Availability:
        try:
            import gliner  # noqa: F401
        except ImportError:
            return model_cache.Availability(False, "gliner is not installed (pip install '.[ner]')")
        return model_cache.check(self.cache, self.settings.model)

    def load(self) -> None:
        avail = self.availability()
        if not avail.ok:
            raise RuntimeError(avail.reason)
        from gliner import GLiNER

        self.model = GLiNER.from_pretrained(
            str(model_cache.model_dir(self.cache, self.settings.model)),
            local_files_only=True,
            map_location="cuda" if self.profile == "gpu" else "cpu",
        )
        self.model.eval()

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

    def predict(self, texts: list[str], labels: list[str], threshold: float) -> list[list[dict]]:
        """Per text: spans {text, label, score, start, end} (character offsets)."""
        if self.model is None:
            raise RuntimeError("NerEngine.load() has not been called")
        self.check(texts, labels, threshold)
        out = self.model.inference(
            texts, labels, threshold=threshold, flat_ner=True, batch_size=GLINER_BATCH
        )
        return [
            [
                {"text": e["text"], "label": e["label"], "score": float(e["score"]),
                 "start": int(e["start"]), "end": int(e["end"])}
                for e in spans
            ]
            for spans in out
        ]

    def info(self) -> dict:
        return {
            "model": self.settings.model,
            "backend": "GLiNER",
            "device": "cuda" if self.profile == "gpu" else "cpu",
        }


@serve.deployment(max_ongoing_requests=64)
class GlinerNER(ModelReplica):
    """Serves one NerEngine; batches concurrent requests with the same labels and threshold."""

    def __init__(self, settings: NerSettings, cache: str, profile: str, gpu_memory_gb: float = 0.0):
        super().__init__(NerEngine(settings, Path(cache), profile), gpu_memory_gb)

    def configure(self, user_config: dict) -> None:
        self._batch.set_max_batch_size(int(user_config.get("max_batch_size", 16)))
        self._batch.set_batch_wait_timeout_s(float(user_config.get("batch_wait_timeout_s", 0.01)))

    async def predict(self, texts: list[str], labels: list[str], threshold: float) -> list[list[dict]]:
        self.engine.check(texts, labels, threshold)
        return await self._batch((texts, tuple(labels), threshold))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batch(self, requests: list[tuple]) -> list[list[list[dict]]]:
        return await asyncio.to_thread(self._predict_many, requests)

    def _predict_many(self, requests: list[tuple]) -> list[list[list[dict]]]:
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
