"""Shared fixtures: one real two-node Ray cluster per test session.

The cluster mirrors Titan + Panda (a head labelled titan and a worker labelled
panda, one logical GPU each) and serves the production ``serve_config.yaml``
with the CPU embedded default. It uses free ports and its own RAY_TMPDIR, so it
never touches Redis on 6379 nor a cluster started by ``make run``.

Markers come from the folder: tests/unit -> unit, tests/integration -> integration.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_TOKEN = "test-token-6f1c"

# This checkout's code, for the test process and the Ray workers it starts
# (ahead of an editable install that may point at another checkout).
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cluster import sandbox  # noqa: E402  (after sys.path points at this checkout)
from cluster.sandbox import Sandbox  # noqa: E402
from tests.fakes.tcp_proxy import TcpProxy  # noqa: E402


def pytest_collection_modifyitems(items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if len(parts) > 1:
            item.add_marker(parts[0])


# The shared cluster is a cluster.sandbox.Sandbox (ServeCluster kept as the fixture's type name).
ServeCluster = Sandbox


TEST_PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/5")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(TEST_PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class StoreProxies:
    """The network between the app and the real PostgreSQL and Redis."""

    postgres: TcpProxy
    redis: TcpProxy


def _through(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user}{'@' if user else ''}{proxy.host}:{proxy.port}"))


@pytest.fixture(scope="session")
def store_proxies() -> StoreProxies:
    """TCP proxies in front of the real PostgreSQL and Redis that every SERVE_STORES__*
    URL of the session goes through: a test takes a store off the network with
    ``with store_proxies.postgres.cut(): ...``, which brings it back in a finally."""
    pg, redis = urlsplit(TEST_PG_ADMIN), urlsplit(TEST_REDIS)
    proxies = StoreProxies(TcpProxy(pg.hostname, pg.port or 5432),
                           TcpProxy(redis.hostname, redis.port or 6379))
    yield proxies
    proxies.postgres.down()
    proxies.redis.down()


@pytest.fixture(scope="session")
def store_env(store_proxies) -> dict[str, str]:
    """Real PostgreSQL (a database created for this session and dropped after) and Redis
    (keys under a per-session prefix), both reached through ``store_proxies``; Qdrant local
    mode and the graph store in temp folders; exported as SERVE_STORES__* before any app
    is built."""
    import asyncio

    tag = f"{os.getpid()}_{int(time.time())}"
    database = f"her_serve_test_{tag}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{database}"'))
    data = tempfile.mkdtemp(prefix="her-serve-test-stores-")
    env = {
        "SERVE_DATA_DIR": data,
        "SERVE_STORES__POSTGRES_URL": _through(TEST_PG_ADMIN.rsplit("/", 1)[0] + f"/{database}",
                                               store_proxies.postgres),
        "SERVE_STORES__REDIS_URL": _through(TEST_REDIS, store_proxies.redis),
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


DIE_AT_COMMIT = """
CREATE OR REPLACE FUNCTION test_die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'DELETE' AND OLD.metadata ? 'die_at_delete')
            OR (TG_OP <> 'DELETE' AND NEW.metadata ? 'die_at_commit') THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS die_at_commit ON documents;
CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT OR UPDATE OR DELETE ON documents
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_die_at_commit();
"""


@pytest.fixture(scope="session")
def die_at_commit(store_env) -> str:
    """A metadata key: a transaction that writes a document carrying it loses its connection
    at COMMIT, because a deferred constraint trigger in the session's database makes the
    server terminate its own backend then (after ingest wrote Qdrant and the graph)."""
    import asyncio

    import asyncpg

    from deployments.stores.postgres import migrate

    async def install() -> None:
        conn = await asyncpg.connect(store_env["SERVE_STORES__POSTGRES_URL"])
        try:
            await migrate(conn)
            await conn.execute(DIE_AT_COMMIT)
        finally:
            await conn.close()

    asyncio.run(install())
    return "die_at_commit"


@pytest.fixture(scope="session")
def die_at_delete(die_at_commit) -> str:
    """A metadata key: a document stored with it is written normally, but a transaction
    that deletes it loses its connection at COMMIT (the same trigger as ``die_at_commit``,
    after forgetting deleted it from Qdrant and the graph)."""
    return "die_at_delete"


@pytest.fixture(scope="session")
def serve_cluster(store_env) -> ServeCluster:
    """Start titan + panda nodes, deploy serve_config.yaml, wait until /health answers.

    ChatLLM runs the real embedded SmolLM2 (no SERVE_LLM__URL): the fake LLM server is
    only for the faults it alone produces, tested against the forwarding backend."""
    os.environ.pop("SERVE_LLM__URL", None)
    os.environ["SERVE_LLM__TEMPERATURE"] = "0"  # voice replies: the same question, the same answer
    box = sandbox.start(TEST_TOKEN)
    yield box
    box.stop()


@pytest.fixture(scope="session")
def vector_index(serve_cluster):
    """The VectorIndex deployment: its ``fetch`` reads Qdrant itself, not the index in memory."""
    from ray import serve

    return serve.get_deployment_handle("VectorIndex", app_name="assistant")


@pytest.fixture(scope="session")
def stores_holding(store_env, vector_index):
    """``(doc_id, text) -> set`` of the stores that hold anything of that document, each
    asked directly: PostgreSQL (its row or mentions), Qdrant (through VectorIndex.fetch),
    the SQLite graph store, and Redis's embedding cache (an entry for its text)."""
    import asyncio
    import hashlib
    import sqlite3

    import asyncpg
    import redis

    async def relational(doc_id: str) -> bool:
        conn = await asyncpg.connect(store_env["SERVE_STORES__POSTGRES_URL"])
        try:
            return await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM documents WHERE id = $1) "
                "OR EXISTS (SELECT 1 FROM mentions WHERE document_id = $1)", doc_id)
        finally:
            await conn.close()

    def holding(doc_id: str, text: str) -> set[str]:
        found = set()
        if asyncio.run(relational(doc_id)):
            found.add("postgresql")
        if vector_index.fetch.remote([doc_id]).result():
            found.add("qdrant")
        with sqlite3.connect(store_env["SERVE_STORES__GRAPH_PATH"]) as graph:
            if graph.execute("SELECT count(*) FROM mentions WHERE doc_id = ?", (doc_id,)).fetchone()[0]:
                found.add("graph")
        cache = redis.Redis.from_url(TEST_REDIS)  # the real server, not through the proxy
        digest = hashlib.sha256(text.encode()).hexdigest()
        if any(cache.scan_iter(match=f"{store_env['SERVE_STORES__REDIS_PREFIX']}:emb:*:{digest}")):
            found.add("redis")
        return found

    return holding


@pytest.fixture(scope="session")
def api(serve_cluster: ServeCluster) -> httpx.Client:
    """An authenticated HTTP client against the shared test cluster."""
    with serve_cluster.client() as client:
        yield client
