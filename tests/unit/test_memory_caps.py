"""GPU memory caps on CPU: the arithmetic, the config's declarations, the planner, OOM handling."""

from __future__ import annotations

import pytest
import torch
import yaml
from pydantic import ValidationError

from deployments.metrics import GPUMemoryExceeded, ReplicaMetrics, error_kind
from deployments.runtime import GIB, cap_fraction, cap_gpu_memory
from tests.conftest import REPO
from topology.capacity import plan
from topology.nodes import load_nodes
from topology.serve_config import AppArgs, DeploymentSpec, load_app_args


def serve_args() -> AppArgs:
    return load_app_args(yaml.safe_load((REPO / "serve_config.yaml").read_text()))


def test_cap_fraction_is_declared_share_of_device():
    assert cap_fraction(1.1, 16 * GIB) == pytest.approx(1.1 / 16)
    assert cap_fraction(14.1, 128 * GIB) == pytest.approx(14.1 / 128)


def test_cap_fraction_never_exceeds_the_device():
    assert cap_fraction(20, 16 * GIB) == 1.0


def test_cap_fraction_refuses_nothing_declared():
    with pytest.raises(ValueError):
        cap_fraction(0, 16 * GIB)


def test_no_cap_without_cuda():
    assert not torch.cuda.is_available()
    assert cap_gpu_memory(1.1) is None


def test_every_model_deployment_in_serve_config_declares_gpu_memory():
    from graphs.app import DECLARATIONS, GraphDeclaration

    args = serve_args()
    gpu_models = 0
    for name, spec in args.deployments.items():
        if name == "Gateway" or isinstance(DECLARATIONS.get(name), GraphDeclaration):
            assert spec.num_gpus == 0 and spec.gpu_memory_gb == 0, name  # no weights
            continue
        if spec.num_gpus > 0:
            gpu_models += 1
            assert spec.gpu_memory_gb > 0, f"{name} reserves a GPU but declares no memory"
            assert spec.ray_options()["user_config"]["gpu_memory_gb"] == spec.gpu_memory_gb
    assert gpu_models >= 5


def test_topology_rejects_gpu_without_declared_memory():
    with pytest.raises(ValidationError, match="gpu_memory_gb"):
        DeploymentSpec(num_gpus=0.1)


def test_planner_rejects_an_overfull_node():
    args = serve_args().model_copy(deep=True)
    args.deployments["Embedder"].gpu_memory_gb = 3.0  # Panda has 16 - 9.7 = 6.3 GB free
    loads = plan(args, load_nodes())
    problems = {l.node.name: l.problems() for l in loads}
    assert any(p.startswith("panda: declared GPU memory") and "exceeds the 6.30 GB free" in p
               for p in problems["panda"])
    assert problems["titan"] == []


def test_planner_accepts_serve_config_as_planned():
    loads = plan(serve_args(), load_nodes(), planned=True)
    assert [p for l in loads for p in l.problems()] == []


def test_cuda_oom_fails_one_request_with_a_clear_error_and_the_next_succeeds():
    metrics = ReplicaMetrics("Embedder", 1.1)
    with pytest.raises(GPUMemoryExceeded, match=r"Embedder .* cap of 1.1 GB") as info:
        with metrics.observe("embed"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    with metrics.observe("embed"):
        pass  # the same replica keeps serving


def test_other_errors_pass_through_unchanged():
    metrics = ReplicaMetrics("Embedder", 1.1)
    with pytest.raises(ValueError, match="dimensions"):
        with metrics.observe("embed"):
            raise ValueError("dimensions must be between 32 and 1024")


@pytest.mark.parametrize(
    "exc, kind",
    [
        (torch.OutOfMemoryError("CUDA out of memory"), "gpu_oom"),
        (GPUMemoryExceeded("over the cap"), "gpu_oom"),
        (ValueError("bad"), "invalid_request"),
        (TimeoutError(), "timeout"),
        (RuntimeError("boom"), "internal"),
    ],
)
def test_error_kinds(exc, kind):
    assert error_kind(exc) == kind


def test_gpu_memory_error_keeps_its_message_across_a_handle():
    """The gateway's 503 handler matches RayTaskError(GPUMemoryExceeded) and shows its cause."""
    from ray.exceptions import RayTaskError

    cause = GPUMemoryExceeded("Embedder needed more GPU memory than its cap of 1.1 GB")
    remote = RayTaskError("embed", "Traceback ...", cause).as_instanceof_cause()
    assert isinstance(remote, GPUMemoryExceeded)
    assert str(getattr(remote, "cause", remote)) == str(cause)


def test_unset_max_ongoing_requests_leaves_the_decorators_default():
    from deployments.ner import GlinerNER
    from deployments.stt import WhisperSTT

    args = serve_args()
    for name, deployment, default in (("WhisperSTT", WhisperSTT, 8), ("GlinerNER", GlinerNER, 64)):
        options = args.deployments[name].ray_options()
        assert "max_ongoing_requests" not in options
        assert deployment.options(name=name, **options).max_ongoing_requests == default
    kokoro = args.deployments["KokoroTTS"].ray_options()
    assert kokoro["max_ongoing_requests"] == 4  # set in serve_config.yaml: it wins
