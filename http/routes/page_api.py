"""`/`: the live option-chain page, a plain HTML/JS/CSS page that talks to this API like any client.

The page holds no secret, so it is served without a key: it asks the user for the API key, trades it
at `POST /auth/token` for a short-lived JWT for `/ws/ticks`, and reads `GET /chain` with the key.
Its files ship inside the package (`ticker/http/page/`, package data) and are served by name from a
fixed list: no path from a request ever reaches the file system, and nothing comes from a CDN.
"""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web

PAGE_PATH = "/"
ASSET_PREFIX = "/page"
PAGE_DIR = Path(__file__).resolve().parent.parent / "page"
# The page's files, by name (what the URL says) and content type.
ASSETS = {"chain.js": "application/javascript", "chain.css": "text/css"}
# The files change only with the package; a short cache keeps an upgraded server's page current.
_CACHE = {"Cache-Control": "public, max-age=300"}

routes = web.RouteTableDef()


@functools.cache
def _read(name: str) -> bytes:
    return (PAGE_DIR / name).read_bytes()


@routes.get(PAGE_PATH)
async def chain_page(_request: web.Request) -> web.Response:
    return web.Response(body=_read("index.html"), content_type="text/html", charset="utf-8", headers=_CACHE)


@routes.get(ASSET_PREFIX + "/{name}")
async def page_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(body=_read(name), content_type=ASSETS[name], charset="utf-8", headers=_CACHE)
