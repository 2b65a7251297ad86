"""Every model deployment's declaration, in one list: the rest of the code derives from it.

Adding a model: write its module (engine, deployment, ``ModelDeclaration``),
add its declaration here, and give it an entry in ``serve_config.yaml``.
"""

from __future__ import annotations

from deployments.chatterbox import CHATTERBOX
from deployments.declaration import ModelDeclaration
from deployments.embedding import BATCH_EMBEDDER, EMBEDDER
from deployments.graph_index import GRAPH_INDEX
from deployments.kokoro import KOKORO
from deployments.llm import CHAT_LLM
from deployments.ner import NER
from deployments.piper import PIPER
from deployments.stt import WHISPER
from deployments.vector_index import VECTOR_INDEX

MODELS: tuple[ModelDeclaration, ...] = (
    EMBEDDER, BATCH_EMBEDDER, WHISPER, KOKORO, PIPER, CHATTERBOX, NER, VECTOR_INDEX, GRAPH_INDEX,
    CHAT_LLM,
)
BY_NAME: dict[str, ModelDeclaration] = {m.name: m for m in MODELS}


def of_task(task: str) -> tuple[ModelDeclaration, ...]:
    return tuple(m for m in MODELS if m.task == task)
