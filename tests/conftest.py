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

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers(), timeout=60, **kw)


def load_serve_args() -> dict:
    """The assistant app's args from the real serve_config.yaml."""
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    return next(a for a in config["applications"] if a["name"] == "assistant")["args"]


TEST_PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/5")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(TEST_PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def store_env() -> dict[str, str]:
    """Real PostgreSQL (a database created for this session and dropped after) and Redis
    (keys under a per-session prefix), Qdrant local mode and the graph store in temp
    folders; exported as SERVE_STORES__* before any app is built."""
    import asyncio

    tag = f"{os.getpid()}_{int(time.time())}"
    database = f"her_serve_test_{tag}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{database}"'))
    data = tempfile.mkdtemp(prefix="her-serve-test-stores-")
    env = {
        "SERVE_DATA_DIR": data,
        "SERVE_STORES__POSTGRES_URL": TEST_PG_ADMIN.rsplit("/", 1)[0] + f"/{database}",
        "SERVE_STORES__REDIS_URL": TEST_REDIS,
        "SERVE_STORES__REDIS_PREFIX": f"her-serve-test-{tag}",
        "SERVE_STORES__QDRANT_PATH": f"{data}/qdrant",
        "SERVE_STORES__GRAPH_PATH": f"{data}/graph.sqlite",
    }
    os.environ.update(env)
    yield env
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    import redis

    client = redis.Redis.from_url(TEST_REDIS)
    for key in client.scan_iter(match=f"{env['SERVE_STORES__REDIS_PREFIX']}*"):
        client.delete(key)


@pytest.fixture(scope="session")
def serve_cluster(store_env) -> ServeCluster:
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
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            **node_ports(),
            "gcs_server_port": free_port(),
            "dashboard_port": free_port(),
            "num_gpus": defs["titan"].gpus,
            "labels": defs["titan"].labels,
            "resources": defs["titan"].resources,
        },
    )
    panda = cluster.add_node(
        **common,
        **node_ports(),
        num_gpus=defs["panda"].gpus,
        labels=defs["panda"].labels,
        resources=defs["panda"].resources,
    )
    ray.init(address=cluster.address, logging_level="ERROR")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    serve.run(build_app(load_serve_args()), name="assistant", route_prefix="/", blocking=False)
    sc = ServeCluster(cluster, {"titan": cluster.head_node, "panda": panda},
                      f"http://127.0.0.1:{port}", TEST_TOKEN)
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
