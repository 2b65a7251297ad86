"""Shared fixtures: one real two-node Ray cluster per test session.

The cluster mirrors Titan + Panda (a head labelled titan and a worker labelled
panda, one logical GPU each) and serves the production ``serve_config.yaml``
with the CPU embedded default. It uses free ports and its own RAY_TMPDIR, so it
never touches Redis on 6379 nor a cluster started by ``make run``.

Markers come from the folder: tests/unit -> unit, tests/integration -> integration.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TEST_TOKEN = "test-token-6f1c"

# This checkout's code, for the test process and the Ray workers it starts
# (ahead of an editable install that may point at another checkout).
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if len(parts) > 1:
            item.add_marker(parts[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_ports() -> dict[str, int]:
    """Per-node agent ports, all free: two test sessions on one machine never collide."""
    return {
        "metrics_export_port": free_port(),
        "metrics_agent_port": free_port(),
        "dashboard_agent_listen_port": free_port(),
        "runtime_env_agent_port": free_port(),
    }


@dataclass
class ServeCluster:
    """A running test cluster: where to reach it and how to hurt it."""

    cluster: object  # ray.cluster_utils.Cluster
    nodes: dict  # host label -> ray._private.node.Node
    base_url: str
    token: str
    metrics_ports: dict[str, int]
    """Host label -> that node's Prometheus export port (scrape /metrics there)."""
    ray_tmpdir: Path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers(), timeout=60, **kw)


def load_serve_app() -> dict:
    """The assistant application's entry from the real serve_config.yaml."""
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    return next(a for a in config["applications"] if a["name"] == "assistant")


def load_serve_args() -> dict:
    """The assistant app's args from the real serve_config.yaml."""
    return load_serve_app()["args"]


@pytest.fixture(scope="session")
def serve_cluster() -> ServeCluster:
    """Start titan + panda nodes, deploy serve_config.yaml, wait until /health answers."""
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="her-serve-test-ray-")
    for key, value in {
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
        "RAY_USAGE_STATS_ENABLED": "0",
        "SERVE_AUTH__TOKEN": TEST_TOKEN,
    }.items():
        os.environ[key] = value
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from cluster.nodes import load_nodes
    from graphs.app import build_app

    defs = load_nodes()
    common = {"num_cpus": 8, "object_store_memory": 200 * 1024 * 1024}
    head_ports, panda_ports = node_ports(), node_ports()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            **head_ports,
            "gcs_server_port": free_port(),
            "dashboard_port": free_port(),
            "num_gpus": defs["titan"].gpus,
            "labels": defs["titan"].labels,
            "resources": defs["titan"].resources,
        },
    )
    panda = cluster.add_node(
        **common,
        **panda_ports,
        num_gpus=defs["panda"].gpus,
        labels=defs["panda"].labels,
        resources=defs["panda"].resources,
    )
    ray.init(address=cluster.address, logging_level="ERROR")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    app = load_serve_app()
    serve.run(build_app(app["args"]), name="assistant", route_prefix="/", blocking=False,
              logging_config=app.get("logging_config"))
    sc = ServeCluster(cluster, {"titan": cluster.head_node, "panda": panda},
                      f"http://127.0.0.1:{port}", TEST_TOKEN,
                      {"titan": head_ports["metrics_export_port"],
                       "panda": panda_ports["metrics_export_port"]},
                      Path(os.environ["RAY_TMPDIR"]))
    _wait_running(sc)
    yield sc
    # ray.shutdown() alone: serve.shutdown() costs ~5 s and the processes die with the cluster.
    ray.shutdown()
    cluster.shutdown()


def _wait_running(sc: ServeCluster, timeout_s: float = 900) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = serve.status().applications.get("assistant")
        if status and status.status == "RUNNING":
            if httpx.get(f"{sc.base_url}/health", timeout=10).status_code == 200:
                return
        if status and status.status == "DEPLOY_FAILED":
            raise RuntimeError(f"test app failed to deploy: {status.message}")
        time.sleep(1)
    raise TimeoutError(f"test app not running after {timeout_s} s: {status}")


@pytest.fixture(scope="session")
def api(serve_cluster: ServeCluster) -> httpx.Client:
    """An authenticated HTTP client against the shared test cluster."""
    with serve_cluster.client() as client:
        yield client
