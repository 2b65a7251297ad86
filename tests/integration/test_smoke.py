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


def test_the_app_is_built_inside_the_cluster_as_serve_deploy_builds_it(serve_cluster):
    """The sandbox deploys serve_config.yaml's application entry through Serve's controller,
    as `serve deploy` does on Titan: built in the test process instead, the app's handles
    would carry that process's transport (Ray actor calls where Serve was imported before
    SERVE_ENV was set), not the cluster's gRPC (docs/performance.md, cut 14)."""
    from ray.serve.context import _get_global_client

    app = _get_global_client().get_serve_details()["applications"]["assistant"]
    assert app["deployed_app_config"]["import_path"] == "graphs.app:build_app"
    assert serve_cluster.base_url != serve_cluster.proxy_url  # titan's Gateway, straight
