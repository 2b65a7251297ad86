"""Status, metrics and logs on the real two-node test cluster."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from api.schemas import ClusterStatus
from clients.status_view import render_capacity, render_status
from cluster.sandbox import serve_args as load_serve_args
from topology.serve_config import AppArgs

GIB = 1024**3


@pytest.fixture(scope="module")
def status(api) -> ClusterStatus:
    r = api.get("/v1/status")
    assert r.status_code == 200, r.text
    return ClusterStatus.model_validate(r.json())


def test_status_needs_the_token(serve_cluster):
    assert httpx.get(f"{serve_cluster.base_url}/v1/status").status_code == 401


def test_status_nodes_are_rays_nodes(serve_cluster, status):
    import ray

    live = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    reported = {n.node_id: n for n in status.nodes if n.alive}
    assert reported.keys() == live.keys()
    assert sorted(n.host for n in reported.values()) == ["panda", "titan"]
    for node_id, n in reported.items():
        assert n.labels["host"] == live[node_id]["Labels"]["host"]
        assert n.gpus == live[node_id]["Resources"]["GPU"] == 1


def test_status_deployments_match_serve_and_the_config(serve_cluster, status):
    from ray import serve

    serve_app = serve.status().applications["assistant"]
    topology = AppArgs.model_validate(load_serve_args())
    node_ids = {n.node_id: n.host for n in status.nodes}
    by_name = {d.name: d for d in status.deployments}
    assert status.app_status == "RUNNING"
    assert by_name.keys() == set(topology.deployments)
    for name, spec in topology.deployments.items():
        d = by_name[name]
        assert (d.num_gpus, d.gpu_memory_gb, d.hosts) == (spec.num_gpus, spec.gpu_memory_gb, spec.hosts)
        live = serve_app.deployments.get(name)
        if live is None:
            assert d.status == "NOT_STARTED" and d.message and not d.replicas
            continue
        assert d.status == live.status.value == "HEALTHY"
        assert len(d.replicas) == live.replica_states.get("RUNNING") == spec.num_replicas
        for r in d.replicas:
            assert r.error is None
            assert node_ids[r.node_id] == r.host  # the replica's own node id and label agree
            assert r.host in spec.hosts
    embedder = by_name["Embedder"].replicas[0]
    # serve_config.yaml's declared memory reached the replica; on CPU it is not enforced.
    assert embedder.gpu_memory_gb == topology.deployments["Embedder"].gpu_memory_gb > 0
    assert (embedder.backend, embedder.device) == ("MiniLMBackend", "cpu")
    assert embedder.gpu_memory_capped is False and embedder.gpu_memory_used_gb is None
    assert {r.host for r in by_name["Gateway"].replicas} == {"titan", "panda"}
    assert "model cache" in by_name["ChatterboxTTS"].message  # weights absent: not started


def test_status_budget_is_the_planner_next_to_running_replicas(status):
    from topology.capacity import plan
    from topology.nodes import load_nodes

    topology = AppArgs.model_validate(load_serve_args())
    planned = {l.node.name: l for l in plan(topology, load_nodes())}
    embedder_host = next(d for d in status.deployments if d.name == "Embedder").replicas[0].host
    for node in status.budget:
        load = planned[node.node]
        assert [(r.deployment, r.planned_replicas, r.planned_gpus, r.planned_memory_gb)
                for r in node.rows] == load.rows
        assert node.problems == load.problems() == []
        row = next(r for r in node.rows if r.deployment == "Embedder")
        expected = 1 if node.host == embedder_host else 0
        declared = topology.deployments["Embedder"].gpu_memory_gb
        assert (row.running_replicas, row.running_memory_gb) == (expected, expected * declared)


def test_renderers_show_the_live_status(api):
    raw = api.get("/v1/status").json()
    console = Console(record=True, width=220)
    console.print(render_status(raw))
    console.print(render_capacity(raw))
    text = console.export_text()
    for word in ("titan", "panda", "Embedder", "MiniLMBackend", "Gateway", "NOT_STARTED",
                 "cap not enforced", "planned GB", "fits"):
        assert word in text, word
    assert "DOES NOT FIT" not in text


def scrape(port: int) -> dict[str, list]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def wait_for_samples(serve_cluster, want: dict[str, dict], timeout_s: float = 90) -> dict:
    """Scrape every node until each metric has a sample with the wanted labels.

    Ray's metrics agent exports with a delay of several seconds.
    """
    deadline, missing = time.monotonic() + timeout_s, list(want)
    while time.monotonic() < deadline:
        samples = {}
        for port in serve_cluster.metrics_ports.values():
            for name, rows in scrape(port).items():
                samples.setdefault(name, []).extend(rows)
        found = {
            name: [s for s in samples.get(name, []) if labels.items() <= s.labels.items()]
            for name, labels in want.items()
        }
        missing = [name for name, rows in found.items() if not rows]
        if not missing:
            return found
        time.sleep(3)
    raise AssertionError(f"metrics never exported: {missing}")


def test_metrics_reach_prometheus(serve_cluster, api):
    for n in (1, 3):
        assert api.post("/v1/embeddings", json={"input": ["hello"] * n}).status_code == 200
    bad = api.post("/v1/embeddings", json={"input": "hello", "dimensions": 7})
    assert bad.status_code == 400
    assert httpx.get(f"{serve_cluster.base_url}/v1/models").status_code == 401
    found = wait_for_samples(serve_cluster, {
        "ray_her_serve_model_requests": {"deployment": "Embedder", "method": "embed"},
        "ray_her_serve_model_errors": {"deployment": "Embedder", "kind": "invalid_request"},
        "ray_her_serve_model_latency_ms": {"deployment": "Embedder", "method": "embed"},
        "ray_her_serve_batch_items": {"deployment": "Embedder"},
        "ray_her_serve_gpu_memory_cap_bytes": {"deployment": "Embedder"},
        "ray_her_serve_http_requests": {"route": "/v1/embeddings", "status_class": "2xx"},
        "ray_her_serve_http_latency_ms": {"route": "/v1/embeddings", "method": "POST"},
    })
    # The exposition names docs/observability.md gives.
    assert {s.name for s in found["ray_her_serve_model_requests"]} == {"ray_her_serve_model_requests_total"}
    assert "ray_her_serve_http_latency_ms_bucket" in {s.name for s in found["ray_her_serve_http_latency_ms"]}
    cap = found["ray_her_serve_gpu_memory_cap_bytes"][0].value
    declared = AppArgs.model_validate(load_serve_args()).deployments["Embedder"].gpu_memory_gb
    assert cap == pytest.approx(declared * GIB) and declared > 0
    errors = sum(s.value for s in found["ray_her_serve_model_errors"])
    assert errors >= 1
    auth_failures = wait_for_samples(serve_cluster, {
        "ray_her_serve_http_requests": {"route": "/v1/models", "status_class": "4xx"},
    })
    assert auth_failures


def serve_logs(serve_cluster):
    """Serve's log folder of the test session (Ray nests its sessions under RAY_TMPDIR/ray)."""
    return serve_cluster.ray_tmpdir / "ray" / "session_latest" / "logs" / "serve"


def serve_log_lines(serve_cluster, prefix: str) -> list[dict]:
    lines = []
    for path in serve_logs(serve_cluster).glob(f"{prefix}*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
    return lines


def test_request_id_reaches_gateway_and_embedder_logs(serve_cluster, api):
    rid = f"obs-{uuid.uuid4().hex[:12]}"
    r = api.post("/v1/embeddings", json={"input": "where is my phone"}, headers={"X-Request-ID": rid})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == rid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        gateway = [l for l in serve_log_lines(serve_cluster, "replica_assistant_Gateway_")
                   if l.get("request_id") == rid]
        embedder = [l for l in serve_log_lines(serve_cluster, "replica_assistant_Embedder_")
                    if l.get("request_id") == rid]
        if gateway and embedder:
            break
        time.sleep(1)
    assert gateway and embedder, "request id missing from the gateway or the embedder logs"
    assert {l["deployment"] for l in embedder} == {"assistant_Embedder"}
    assert {l["deployment"] for l in gateway} == {"assistant_Gateway"}


def test_no_token_in_any_serve_log(serve_cluster, api):
    api.get("/v1/status")
    files = list(serve_logs(serve_cluster).glob("*.log"))
    assert any(f.name.startswith("replica_assistant_Gateway_") for f in files)
    for path in files:
        assert serve_cluster.token not in path.read_text(errors="replace"), path.name


def test_status_shows_each_models_availability_per_node(status):
    by_name = {d.name: d for d in status.deployments}
    assert by_name["Embedder"].nodes == {"titan": "available", "panda": "available"}
    replica = by_name["Embedder"].replicas[0]
    assert replica.available and replica.profile == "cpu"  # resolved on its own node
    for node in status.budget:
        row = next(r for r in node.rows if r.deployment == "ChatterboxTTS")
        assert not row.available and "model cache" in row.reason
        assert row.running_replicas == 0
