"""/docs renders in a real browser with nothing but the gateway's own files (no CDN: nodes
have no internet). Serves the edge app with uvicorn on a free port; Chromium is Debian's."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest
import uvicorn

from cluster.sandbox import free_port
from tests.edgekit import model_free_gateway

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")


@pytest.fixture()
def base_url():
    app = model_free_gateway("s3cret")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_docs_render_offline_with_every_route(base_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(f"{base_url}/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        operations = page.locator(".opblock").count()
        title = page.locator(".info .title").inner_text()
        browser.close()
    assert "her-serve" in title
    spec = httpx.get(f"{base_url}/openapi.json").json()
    assert operations == sum(len(ops) for ops in spec["paths"].values())
    assert requested and all(url.startswith(base_url) for url in requested), requested
