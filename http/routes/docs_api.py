"""`/docs`: the API described by `/openapi.json`, browsable in Swagger UI.

Swagger UI's files come from the `swagger-ui-bundle` package (Apache-2.0) and are served by this
process under `/docs/static/`: the page works on a machine without internet access. `/` is the
option-chain page (`page_api`).
"""

from __future__ import annotations

import functools

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
STATIC_PREFIX = "/docs/static"
# The files the page uses, by name: a fixed list rather than a directory, so no path from a request
# ever reaches the file system.
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "application/javascript",
          "swagger-ui-standalone-preset.js": "application/javascript", "favicon-32x32.png": "image/png"}

# Only files this process serves; the spec comes from /openapi.json on the same origin.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ticker API</title>
  <link rel="stylesheet" href="{static}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{static}/swagger-ui-bundle.js"></script>
  <script src="{static}/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout",
      validatorUrl: null
    }});
  </script>
</body>
</html>
"""


@functools.lru_cache(maxsize=1)
def _page() -> str:
    return _PAGE.format(static=STATIC_PREFIX)


async def docs_page(_request: web.Request) -> web.Response:
    return web.Response(text=_page(), content_type="text/html")


@functools.cache
def _asset(name: str) -> bytes:
    return (swagger_ui_path / name).read_bytes()


async def docs_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    # The bundle's files change only with the package: browsers may keep them a day.
    return web.Response(body=_asset(name), content_type=ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})


def add_docs_routes(app: web.Application) -> None:
    app.router.add_get(DOCS_PATH, docs_page)
    app.router.add_get(STATIC_PREFIX + "/{name}", docs_asset)
