"""Availability decided on the node: what a node says, how a deployment is narrowed to the
nodes that have its model, and a replica without its model refusing calls."""

from __future__ import annotations

import asyncio

import pytest

from deployments.chatterbox import CHATTERBOX
from deployments.embedding import BATCH_EMBEDDER
from deployments.metrics import ModelUnavailable
from deployments.piper import PIPER
from deployments.settings import Settings
from graphs.placement import NOT_PROBED, check_here, narrowed, why_nowhere, with_fallback
from graphs.topology import DeploymentSpec


def test_a_node_reports_each_models_availability_from_its_own_view(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVE_MODEL_CACHE", str(tmp_path / "empty-cache"))
    here = check_here([PIPER.name, BATCH_EMBEDDER.name, CHATTERBOX.name], Settings(), "cpu")
    assert here["PiperTTS"] == "available"
    assert "GPU nodes only" in here["BatchEmbedder"]
    assert str(tmp_path / "empty-cache") in here["ChatterboxTTS"]  # this node's cache was read


def test_a_gpu_profile_on_a_node_without_cuda_is_a_reason_not_a_crash():
    here = check_here([BATCH_EMBEDDER.name], Settings(), "gpu")
    assert "no CUDA device" in here["BatchEmbedder"]


def test_the_model_cache_is_read_on_the_node_that_runs_the_code(tmp_path, monkeypatch):
    head = Settings(model_cache=tmp_path / "head")
    monkeypatch.setenv("SERVE_MODEL_CACHE", str(tmp_path / "worker"))
    assert head.on_this_node().model_cache == tmp_path / "worker"
    assert head.on_this_node().auth == head.auth


SPEC = DeploymentSpec(num_replicas=2, max_replicas_per_node=1, hosts=["panda", "titan"],
                      routing="preferred_host", num_gpus=0.25, gpu_memory_gb=3.7)


def test_a_deployment_is_bound_only_where_its_model_is():
    spec = narrowed(SPEC, {"panda": "available", "titan": "weights absent"})
    assert spec.hosts == ["panda"] and spec.num_replicas == 1 and spec.routing == "default"
    assert spec.ray_options()["ray_actor_options"]["label_selector"] == {"host": "panda"}


def test_a_node_that_did_not_answer_keeps_its_replica():
    view = {"panda": "weights absent", "titan": NOT_PROBED}
    assert narrowed(SPEC, view).hosts == ["titan"]
    assert why_nowhere(view) == ""
    everywhere = {"panda": "available", "titan": "available"}
    assert narrowed(SPEC, everywhere) is SPEC


def test_unavailable_everywhere_says_why_per_node():
    assert why_nowhere({"panda": "weights absent", "titan": "weights absent"}) == "weights absent"
    reason = why_nowhere({"panda": "weights absent", "titan": "no CUDA device"})
    assert reason == "panda: weights absent; titan: no CUDA device"


@pytest.fixture
def cloner_without_weights(tmp_path, monkeypatch):
    """A ChatterboxTTS replica started on a node whose model cache lacks its weights."""
    monkeypatch.setenv("SERVE_MODEL_CACHE", str(tmp_path))
    return CHATTERBOX.deployment.func_or_class(CHATTERBOX.engine, Settings(), "cpu")


def test_a_replica_without_its_weights_reports_it_and_refuses_calls(cloner_without_weights):
    replica = cloner_without_weights
    info = replica.info()
    assert not info.available and "not in the local model cache" in info.reason
    asyncio.run(replica.check_health())  # alive: Serve must not restart it in a loop
    replica.reconfigure({"gpu_memory_gb": 3.7})  # Serve configures it like any replica
    with pytest.raises(ModelUnavailable, match="takes no calls"):
        replica.voices()

    async def speak():
        return [p async for p in replica.stream("Hello.")]

    with pytest.raises(ModelUnavailable):
        asyncio.run(speak())


def test_when_no_node_answers_the_builders_own_check_keeps_an_absent_model_off(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("SERVE_MODEL_CACHE", str(tmp_path))
    views = with_fallback({"ChatterboxTTS": {"panda": NOT_PROBED, "titan": NOT_PROBED},
                           "PiperTTS": {"panda": NOT_PROBED, "titan": NOT_PROBED},
                           "BatchEmbedder": {"titan": "available", "panda": NOT_PROBED}},
                          Settings(), "cpu")
    assert "no node answered" in why_nowhere(views["ChatterboxTTS"])  # never started
    assert views["PiperTTS"] == {"panda": NOT_PROBED, "titan": NOT_PROBED}  # replicas re-check
    assert views["BatchEmbedder"]["titan"] == "available"  # a node answered: its word stands
