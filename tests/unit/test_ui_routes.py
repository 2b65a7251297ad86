"""The push-to-talk page's routes: open by exact path only, right media types, no traversal,
nothing loaded from outside the cluster."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from graphs.routes import ui
from tests.edgekit import model_free_gateway

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client() -> TestClient:
    """The real gateway app (its token rule included), with no model behind it."""
    app = model_free_gateway(TOKEN)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_the_page_and_its_files_need_no_token(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    linked = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert {"/static/app.js", "/static/style.css"} <= set(linked)
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in [*linked, "/static/capture.js"]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(types[path[path.rindex("."):]])
        assert response.headers["x-content-type-options"] == "nosniff"


def test_only_the_exact_paths_are_open(client):
    assert ui.OPEN_PATHS == {"/", *(f"/static/{p.name}" for p in ui.STATIC_DIR.iterdir())}
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers=AUTH).status_code == 200
    for path in ["/static/", "/static", "/static/nope.js", "/static/app.js/", "/static//app.js",
                 "/static/../v1/models", "/static/%2e%2e/http.py", "/static/..%2Fhttp.py",
                 "/static/..%5Chttp.py", "/index.html", "/static/app.js%00.css"]:
        assert client.get(path).status_code == 401, path


def test_no_request_path_reaches_the_file_system(client):
    for name in ["nope.js", "%2e%2e", "__init__.py", "..%2Fhttp.py", "..%5Chttp.py"]:
        response = client.get(f"/static/{name}", headers=AUTH)
        assert response.status_code == 404, name
    assert "no static file" in client.get("/static/__init__.py", headers=AUTH).json()["error"]["message"]
    assert client.post("/", headers=AUTH).status_code == 405


def test_the_page_loads_nothing_from_outside():
    for path in ui.STATIC_DIR.iterdir():
        text = re.sub(r'xmlns="http://www\.w3\.org/2000/svg"', "", path.read_text())
        assert not re.search(r"(https?:)?//[\w-]+\.\w", text), path.name
