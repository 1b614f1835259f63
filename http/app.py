"""`create_app(settings)`: the aiohttp application, its middlewares, routes and lifecycle.

Middlewares, outermost first: request id + metrics, the error envelope, the API key, the rate limit.
Startup opens one arq/Redis pool, one Postgres pool and the tick feed; shutdown first ends
long-polls and WebSocket sessions so in-flight requests can finish inside the drain window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ticker.http import (
    routes_accounts,
    routes_admin,
    routes_gtt,
    routes_instruments,
    routes_jobs,
    routes_orders,
    routes_postback,
    routes_subscriptions,
)
from ticker.http.audit_batch import AuditBatcher
from ticker.http.auth import JwtVerifier, api_key_middleware
from ticker.http.errors import error_middleware
from ticker.http.health import health
from ticker.http.inputs import MAX_BODY_BYTES
from ticker.http.observe import HttpMetrics, observe_middleware
from ticker.http.openapi import openapi_json
from ticker.http.ratelimit import RateLimiter, rate_limit_middleware
from ticker.http.redis_pipe import RedisPipe
from ticker.http.refs import Refs
from ticker.http.state import METRICS, SERVICES, SETTINGS, Services
from ticker.http.ws_hub import TickHub
from ticker.http.ws_ticks import ws_ticks
from ticker.infra.accounts import account_store
from ticker.infra.db import create_pool
from ticker.infra.metrics import metrics_handler, new_registry
from ticker.infra.queue import create_queue, names_for
from ticker.infra.settings import Settings

LIMITER = web.AppKey("limiter", RateLimiter)


def create_app(settings: Settings) -> web.Application:
    settings.require("redis_url", "database_url")
    metrics = HttpMetrics(new_registry())
    limiter = RateLimiter(names_for(settings), settings.http_rate_limit_per_minute)
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[observe_middleware(metrics), error_middleware, api_key_middleware(settings),
                     rate_limit_middleware(limiter, metrics)],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LIMITER] = limiter
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_stop_taking_work)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler(metrics.registry))
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/ws/ticks", ws_ticks)
    for module in (routes_orders, routes_jobs, routes_subscriptions, routes_instruments, routes_accounts,
                   routes_admin, routes_gtt, routes_postback):
        app.add_routes(module.routes)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    names = names_for(settings)
    redis = await create_queue(settings)
    try:
        db = await create_pool(settings.database_url, min_size=settings.db_pool_min,
                               max_size=settings.db_pool_max)
    except BaseException:
        await redis.aclose()
        raise
    pipe = RedisPipe(settings.redis_url)
    app[LIMITER].bind(pipe)
    hub = TickHub(redis, names, metrics, queue_max=settings.ws_client_queue_max,
                  max_clients=settings.ws_max_clients)
    svc = Services(settings=settings, names=names, redis=redis, db=db, metrics=metrics,
                   accounts=account_store(db, settings), limiter=app[LIMITER],
                   jwt=JwtVerifier(settings), hub=hub, refs=Refs(db, settings), pipe=pipe,
                   audit=AuditBatcher(db))
    app[SERVICES] = svc
    await hub.start()
    try:
        yield
    finally:
        svc.stopping.set()
        await hub.close()
        await pipe.close()
        await svc.audit.close()
        await svc.jwt.close()
        await db.close()
        await redis.aclose()


async def _stop_taking_work(app: web.Application) -> None:
    """Runs when the listener has closed: end long-polls now and send WebSocket clients away."""
    svc = app.get(SERVICES)
    if svc is None:
        return
    svc.stopping.set()
    await svc.hub.send_away()
