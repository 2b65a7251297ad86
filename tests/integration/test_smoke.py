def test_health_open_without_token(serve_cluster):
    import httpx

    r = httpx.get(f"{serve_cluster.base_url}/health")
    assert r.status_code == 200
    assert r.json()["deployments"]["Embedder"] == "ready"


def test_health_says_per_node_where_each_model_can_run(serve_cluster):
    """Each host answered for itself (a Ray task pinned to it at build time)."""
    import httpx

    nodes = httpx.get(f"{serve_cluster.base_url}/health").json()["nodes"]
    assert nodes["Embedder"] == {"titan": "available", "panda": "available"}
    assert nodes["PiperTTS"] == {"panda": "available", "titan": "available"}
    assert "GPU nodes only" in nodes["BatchEmbedder"]["titan"]
    cloner = nodes["ChatterboxTTS"]
    assert set(cloner) == {"panda", "titan"}
    assert all("not in the local model cache" in why for why in cloner.values())
