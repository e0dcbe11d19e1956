"""The browser front-end: static ES modules, HTML and CSS served from package data.

There is no build step and nothing is fetched from elsewhere at run time, so the box's UI
works on an isolated network and the Content-Security-Policy can be ``'self'`` only. The
pages talk to the REST API (``/api/v1``) with the session cookie; see docs/design/webui.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

#: Same-origin only. ``blob:`` media is the MSE fallback's MediaSource URL; WebRTC tracks
#: are MediaStreams and need no media-src entry.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "media-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
#: Flat directory, plain names: nothing a request names can leave ``static/``.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|js|css|svg|png|ico)$")


class _Files:
    """Static files read once (in a thread) and kept with their ETag.

    The names carry no content hash (no build step), so browsers revalidate every load
    (``no-cache``) and get a 304 while the file is unchanged — an upgrade of the box is
    seen at once, and a reload costs one small request per module.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[bytes, str]] = {}

    async def get(self, name: str) -> tuple[bytes, str] | None:
        if not _NAME.match(name):
            return None
        hit = self._cache.get(name)
        if hit is None:
            try:
                data = await asyncio.to_thread((self.root / name).read_bytes)
            except (FileNotFoundError, IsADirectoryError):
                return None
            hit = (data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
            self._cache[name] = hit
        return hit

    async def serve(self, request: web.Request, name: str) -> web.StreamResponse:
        found = await self.get(name)
        if found is None:
            raise web.HTTPNotFound(text="no such file\n")
        data, etag = found
        headers = {
            "Cache-Control": "no-cache",
            "ETag": etag,
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
        }
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        kind = _TYPES[Path(name).suffix]
        charset = "utf-8" if kind.startswith("text/") or kind.endswith("+xml") else None
        return web.Response(body=data, content_type=kind, charset=charset, headers=headers)


def mount(router: web.UrlDispatcher) -> None:
    """Serve the UI: ``/`` is the single page, ``/ui/<file>`` its modules and style."""
    files = _Files(STATIC)

    async def index(request: web.Request) -> web.StreamResponse:
        return await files.serve(request, "index.html")

    async def static(request: web.Request) -> web.StreamResponse:
        return await files.serve(request, request.match_info["name"])

    router.add_get("/", index)
    router.add_get("/ui/", index)
    router.add_get("/ui/{name}", static)
