def test_health_open_without_token(serve_cluster):
    import httpx

    r = httpx.get(f"{serve_cluster.base_url}/health")
    assert r.status_code == 200
    assert r.json()["deployments"]["Embedder"] == "ready"
