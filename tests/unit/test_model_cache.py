"""Weights are fetched where they are read: `make models` against a fake hub folder, no network.

The fake hub is a folder laid out like the hub's repositories (and like
openai-whisper's download, named as its URL table names it), holding the
files each declaration says its engine reads, as empty placeholders. After
``python -m deployments.model_cache fetch --from <hub>``, every model with
production weights must be available on a GPU node, and its engine must point
at the fetched files.
"""

from __future__ import annotations

import os

import pytest

from deployments import model_cache
from deployments.declaration import Weights
from deployments.registry import MODELS
from deployments.settings import Settings

WITH_WEIGHTS = [m for m in MODELS if m.weights(Settings())]


def fake_hub_file(hub, w: Weights) -> None:
    """What the hub (or whisper's URL table) would serve for ``w``, as empty files."""
    if w.layout == "openai-whisper":
        whisper = pytest.importorskip("whisper", reason="openai-whisper not installed")
        name = os.path.basename(whisper._MODELS[w.source])
        (hub / "openai-whisper").mkdir(parents=True, exist_ok=True)
        (hub / "openai-whisper" / name).write_bytes(b"checkpoint")
        return
    repo = hub / w.source
    for pattern in w.files or ("config.json",):
        path = repo / pattern.replace("*", "v1_0")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")


@pytest.fixture
def gpu_node(monkeypatch, tmp_path):
    """Settings of a GPU node whose model cache is empty: CUDA is reported present."""
    monkeypatch.setattr("deployments.profile.cuda_available", lambda: True)
    monkeypatch.setenv("SERVE_MODEL_CACHE", str(tmp_path / "cache"))
    return Settings()


def test_every_model_with_production_weights_is_covered():
    assert {m.name for m in WITH_WEIGHTS} >= {
        "Embedder", "BatchEmbedder", "WhisperSTT", "KokoroTTS", "ChatterboxTTS", "GlinerNER"}


@pytest.mark.parametrize("model", WITH_WEIGHTS, ids=lambda m: m.name)
def test_fetch_puts_weights_where_the_engine_reads_them(model, gpu_node, tmp_path):
    hub = tmp_path / "hub"
    weights = model.weights(gpu_node)
    for w in weights:
        fake_hub_file(hub, w)
    engine = model.engine(gpu_node, "gpu")
    before = engine.availability()
    if before.ok:
        pytest.fail(f"{model.name} is available before anything was fetched")

    assert model_cache.main(["fetch", model.name, "--from", str(hub)]) == 0

    after = model.engine(gpu_node, "gpu")
    assert after.availability().ok, after.availability().reason
    assert [w.path(gpu_node.model_cache) for w in weights] == [after.weights_path]
    assert after.weights_path.exists()


def test_whisper_is_fetched_as_openai_whisper_checkpoint_not_the_hub_repo(gpu_node):
    from deployments.stt import WHISPER

    (w,) = WHISPER.weights(gpu_node)
    assert w.layout == "openai-whisper"
    assert w.path(gpu_node.model_cache) == gpu_node.model_cache / "openai-whisper" / "large-v3.pt"


def test_a_repo_lacking_a_file_the_engine_reads_is_absent(tmp_path):
    w = Weights("hexgrad/Kokoro-82M", files=("config.json", "kokoro-v1_*.pth"))
    (tmp_path / w.source).mkdir(parents=True)
    (tmp_path / w.source / "config.json").write_text("{}")
    avail = w.check(tmp_path)
    assert not avail.ok and "kokoro-v1_*.pth" in avail.reason and "make models" in avail.reason


def test_unknown_deployment_is_refused(gpu_node, capsys):
    assert model_cache.main(["fetch", "NoSuchModel", "--from", "/nonexistent"]) == 2
    assert "NoSuchModel" in capsys.readouterr().out
