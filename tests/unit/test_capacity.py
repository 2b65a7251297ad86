"""The capacity planner on the real serve_config.yaml and on configs that do not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from cluster.capacity import main
from topology.capacity import check_files, plan
from topology.nodes import load_nodes
from topology.serve_config import AppArgs, DeploymentSpec, load_app_args

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "serve_config.yaml"


def real_args() -> AppArgs:
    return load_app_args(yaml.safe_load(CONFIG.read_text()))


@pytest.mark.parametrize("planned", [False, True])
def test_real_config_fits(planned):
    loads, problems = check_files(CONFIG, planned=planned)
    assert problems == []
    assert {load.node.name for load in loads} == {"titan", "panda"}


def test_failover_targets_count_on_both_nodes():
    loads = {l.node.name: l for l in plan(real_args(), load_nodes(), planned=True)}
    for node in ("titan", "panda"):
        names = [row[0] for row in loads[node].rows]
        assert "KokoroTTS" in names and "ChatterboxTTS" in names
    # BatchEmbedder is pinned to titan: never counted on panda.
    assert "BatchEmbedder" not in [row[0] for row in loads["panda"].rows]


def overfull(tmp_path: Path, **changes) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    deps = config["applications"][0]["args"]["deployments"]
    for name, spec in changes.items():
        deps[name] = {**deps.get(name, {}), **spec}
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_rejects_gpu_memory_over_panda_budget(tmp_path, capsys):
    # Chatterbox at 6 GB on panda (6.3 GB free) plus the Kokoro standby does not fit.
    path = overfull(tmp_path, ChatterboxTTS={"enabled": True, "gpu_memory_gb": 6.0})
    _, problems = check_files(path)
    assert any(p.startswith("panda: declared GPU memory") for p in problems)
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert "does not fit" in err and "navigation-llama-server" in err


def test_rejects_gpu_fractions_over_one(tmp_path):
    path = overfull(tmp_path, Extra={"num_gpus": 0.9, "gpu_memory_gb": 1.0, "hosts": ["titan"]})
    _, problems = check_files(path)
    assert any("titan: GPU reservations sum to" in p for p in problems)


def test_disabled_deployments_count_only_when_planned(tmp_path):
    path = overfull(tmp_path, Extra={"enabled": False, "num_gpus": 0.9, "gpu_memory_gb": 1, "hosts": ["titan"]})
    assert check_files(path)[1] == []
    assert check_files(path, planned=True)[1] != []


def test_unknown_host_is_an_error(tmp_path):
    path = overfull(tmp_path, Extra={"hosts": ["jupiter"]})
    with pytest.raises(ValueError, match="jupiter"):
        check_files(path)
    assert main([str(path)]) == 2


def test_every_gpu_deployment_declares_memory():
    for name, spec in real_args().deployments.items():
        assert spec.num_gpus == 0 or spec.gpu_memory_gb > 0, name
    with pytest.raises(ValidationError, match="gpu_memory_gb"):
        DeploymentSpec(num_gpus=0.1)


def test_ray_options_express_preference_and_failover():
    one_home = DeploymentSpec(hosts=["titan", "panda"], num_gpus=0.02, gpu_memory_gb=1)
    actor = one_home.ray_options()["ray_actor_options"]
    assert actor["label_selector"] == {"host": "titan"}
    assert actor["fallback_strategy"] == [{"label_selector": {"host": "panda"}}]
    per_node = DeploymentSpec(hosts=["panda", "titan"], num_replicas=2, max_replicas_per_node=1)
    opts = per_node.ray_options()
    assert opts["ray_actor_options"]["label_selector"] == {"host": "in(panda,titan)"}
    assert opts["max_replicas_per_node"] == 1
    assert "user_config" not in opts  # no GPU memory declared: nothing to pass
