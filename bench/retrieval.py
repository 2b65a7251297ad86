"""/v1/retrieve latency at 10K and 100K documents on CPU, and Qdrant's own search as a ratio.

    python -m bench.retrieval                      # 10K and 100K, 200 requests each
    python -m bench.retrieval --sizes 10000 --requests 50

Document vectors are synthetic (random unit vectors, 384-dim like MiniLM):
embedding 100K texts on 2 cores would take most of an hour, and search
latency does not depend on what the vectors mean. Queries are real text,
embedded by the served MiniLM, so the embed stage is real. The app runs on a
private one-node Ray cluster on free ports (no PostgreSQL, no Redis: retrieval
does not touch them). Prints a Markdown section for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from bench.report import header, publish
from cluster.local import SERVE_ENV
from cluster.sandbox import HEAD_PORTS, free_ports, gateway_urls

DIM = 384
QUERIES = [
    "when is the dentist appointment", "problems with the car", "travel plans abroad",
    "something is leaking in the house", "music lessons for the children",
    "birthday party at the lake", "what did the vet say about the cat",
]
SERVED = ("Gateway", "Embedder", "VectorIndex", "GraphIndex", "RetrievalGraph")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def fill_qdrant(path: Path, n: int) -> None:
    from deployments.stores.qdrant_store import QdrantStore

    store = QdrantStore("memory", path=path)
    rng = np.random.default_rng(n)
    for start in range(0, n, 5000):
        m = min(5000, n - start)
        vecs = rng.normal(size=(m, DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        ids = [f"doc{start + i}" for i in range(m)]
        store.upsert(ids, vecs, [{"text": f"synthetic document {i}", "metadata": {}} for i in ids])
    store.close()


def vector_stage(path: Path, queries: np.ndarray, reps: int) -> dict:
    """The vector stage alone, in-process: our exact index vs Qdrant's query_points."""
    from deployments.settings import StoreSettings
    from deployments.vector_index import VectorIndexEngine

    engine = VectorIndexEngine(StoreSettings(qdrant_path=path), path, "cpu")
    engine.load()
    ours, theirs, agree = [], [], 0
    for i in range(reps):
        q = queries[i % len(queries)]
        t = time.perf_counter()
        hits = [h.id for h in engine.search(q[None, :], 10)[0]]
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        qhits = [d for d, _ in engine.store.query(q, 10)]
        theirs.append(time.perf_counter() - t)
        agree += hits == qhits
    engine.store.close()
    return {"ours": ours, "qdrant": theirs, "agree": agree / reps}


def app_args() -> dict:
    """serve_config.yaml's topology, cut to what retrieval needs, on one unlabelled node."""
    config = yaml.safe_load(Path("serve_config.yaml").read_text())
    args = next(a for a in config["applications"] if a["name"] == "assistant")["args"]
    deps = {}
    for name in SERVED:
        spec = dict(args["deployments"][name])
        spec.update(hosts=[], num_gpus=0, gpu_memory_gb=0, num_replicas=1, enabled=True)
        spec.pop("max_replicas_per_node", None)
        deps[name] = spec
    return {"profile": "cpu", "deployments": deps}


def served(data: Path, queries_text: list[str], n: int) -> tuple[list[float], dict]:
    from ray import serve

    from graphs.app import build_app

    os.environ.update({
        "SERVE_DATA_DIR": str(data), "SERVE_STORES__QDRANT_PATH": str(data / "qdrant"),
        "SERVE_STORES__GRAPH_PATH": str(data / "graph.sqlite"),
        "SERVE_STORES__POSTGRES_URL": "", "SERVE_STORES__REDIS_URL": "",
    })
    serve.run(build_app(app_args()), name="assistant", route_prefix="/", blocking=False)
    base = next(iter(gateway_urls().values()))  # the Gateway, straight (direct ingress)
    lat, parts = [], {k: [] for k in PARTS}
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(n + 5):
            t = time.perf_counter()
            r = client.post("/v1/retrieve", json={"query": queries_text[i % len(queries_text)], "k": 10})
            elapsed = time.perf_counter() - t
            r.raise_for_status()
            if i >= 5:  # warm-up
                lat.append(elapsed)
                for k, v in accounting(r.json()["timings_ms"], elapsed * 1e3).items():
                    parts[k].append(v)
    serve.delete("assistant")
    return lat, {k: statistics.median(v) for k, v in parts.items()}


PARTS = ("embed", "vector", "graph", "graph bookkeeping", "hop to RetrievalGraph",
         "gateway edge", "HTTP")
"""One request's time, split so that the parts add up to what the client measured."""


def accounting(timings: dict[str, float], client_ms: float) -> dict[str, float]:
    stages = timings["embed"] + timings["vector"] + timings["graph"]
    return {
        "embed": timings["embed"], "vector": timings["vector"], "graph": timings["graph"],
        "graph bookkeeping": timings["retrieval"] - stages,
        "hop to RetrievalGraph": timings["hop"],
        "gateway edge": timings["total"] - timings["retrieval"] - timings["hop"],
        "HTTP": client_ms - timings["total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="her-serve-bench-ray-")
    os.environ.update(SERVE_ENV)
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from deployments.embedding import EmbeddingEngine
    from deployments.settings import EmbeddingSettings

    embedder = EmbeddingEngine(EmbeddingSettings(), "cpu")
    embedder.load()
    qvecs = embedder.embed(QUERIES, is_query=True).vectors
    *ports, http_port = free_ports(len(HEAD_PORTS) + 1)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 8, "object_store_memory": 300 * 1024**2, **dict(zip(HEAD_PORTS, ports)),
    })
    ray.init(address=cluster.address, logging_level="ERROR")
    os.environ["BENCH_HTTP_PORT"] = str(http_port)
    serve.start(http_options={"host": "127.0.0.1", "port": int(os.environ["BENCH_HTTP_PORT"])})
    rows = []
    try:
        for n in args.sizes:
            data = Path(tempfile.mkdtemp(prefix=f"her-serve-bench-{n}-"))
            t = time.perf_counter()
            fill_qdrant(data / "qdrant", n)
            fill_s = time.perf_counter() - t
            vs = vector_stage(data / "qdrant", qvecs, args.requests)
            lat, stages = served(data, QUERIES, args.requests)
            rows.append((n, lat, stages, vs, fill_s))
            print(f"{n}: p50 {pct(lat, 50) * 1e3:.1f} ms, p95 {pct(lat, 95) * 1e3:.1f} ms", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    publish("retrieval", report(rows, args))


def report(rows: list, args) -> list[str]:
    lines = [
        "## Retrieval (`/v1/retrieve`, exact CPU index, MiniLM queries)",
        "",
        header(f"python -m bench.retrieval --sizes {' '.join(map(str, args.sizes))} "
               f"--requests {args.requests}"),
        "Sequential requests over HTTP straight to the Gateway (direct ingress) -> "
        "RetrievalGraph -> Embedder, VectorIndex, GraphIndex on a private one-node Ray cluster. "
        "Document vectors are synthetic (random 384-dim unit vectors; embedding 100K texts on "
        "2 cores takes too long); queries are real text embedded by the served MiniLM. The "
        "graph is empty (synthetic documents have no entities), so the graph stage is its "
        "fixed cost.",
        "",
        "| documents | /v1/retrieve p50 ms | p95 ms | vector stage in-process p50 ms "
        "| Qdrant query_points p50 ms | Qdrant / ours | same top-10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, lat, _, vs, _ in rows:
        ours, qd = pct(vs["ours"], 50) * 1e3, pct(vs["qdrant"], 50) * 1e3
        lines.append(
            f"| {n:,} | {pct(lat, 50) * 1e3:.1f} | {pct(lat, 95) * 1e3:.1f} | {ours:.2f} "
            f"| {qd:.2f} | {qd / ours:.1f}x | {vs['agree']:.0%} |"
        )
    lines += [
        "",
        "Where a request's time goes (medians, ms). Each request's parts add up to what "
        "the client measured: embed, vector and graph are the RetrievalGraph's calls to "
        "each model (hop and work), from the response's `timings_ms`; the rest is the path.",
        "",
        "| documents | " + " | ".join(PARTS) + " | sum of the medians | client p50 |",
        "|---|" + "---|" * (len(PARTS) + 2),
    ]
    for n, lat, parts, _, _ in rows:
        lines.append(f"| {n:,} | " + " | ".join(f"{parts[k]:.1f}" for k in PARTS)
                     + f" | {sum(parts.values()):.1f} | {pct(lat, 50) * 1e3:.1f} |")
    lines += [
        "",
        "Qdrant here is its embedded local mode (the default store), whose search is a "
        "Python/numpy scan; a Qdrant server would be faster than that. GPU figures (cuVS, "
        "cuGraph): not measured; the GPU smoke's run could not carry their wheels.",
    ]
    return lines


if __name__ == "__main__":
    main()
