"""The push-to-talk page: ``GET /`` and its files under ``/static/``, served without a token.

The files are read from ``graphs/static/`` once, when the gateway starts. A
request names one of them exactly, so no request path ever reaches the file
system (nothing to traverse), and the token check opens exactly these paths
(``OPEN_PATHS``). The page's own API calls carry the token (docs/voice.md).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import Response

from graphs.http import APIError, EdgeRoute

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
INDEX = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The browser itself refuses anything from outside the cluster.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def load_assets(folder: Path = STATIC_DIR) -> dict[str, Response]:
    """Each servable file in ``folder`` by name, as its ready response."""
    return {
        path.name: Response(path.read_bytes(), media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in MEDIA_TYPES
    }


ASSETS = load_assets()
OPEN_PATHS = frozenset({"/", *(f"/static/{name}" for name in ASSETS)})
"""The exact paths these routes answer, opened by the gateway's TokenAuth."""

router = APIRouter(route_class=EdgeRoute, include_in_schema=False)


@router.get("/")
async def index() -> Response:
    return ASSETS[INDEX]


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in ASSETS:
        raise APIError(404, f"no static file {name!r}", code="not_found")
    return ASSETS[name]
