"""The streamer's process surface on STREAMER_PORT: `/health` (JSON) and `/metrics` (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from ticker.infra.runtime.prometheus import metrics_handler


def build_app(health: Callable[[], tuple[int, dict]], registry: CollectorRegistry) -> web.Application:
    async def handle_health(_request: web.Request) -> web.Response:
        status, doc = health()
        return web.json_response(doc, status=status)

    app = web.Application()
    app.router.add_get("/health", handle_health)
    app.router.add_get("/metrics", metrics_handler(registry))
    return app
