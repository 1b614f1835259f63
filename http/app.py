"""`create_app(settings)`: the aiohttp application, its middlewares, routes and lifecycle.

Middlewares, outermost first: request id + metrics, the error envelope, the API key, the rate limit.
Startup opens one arq/Redis pool, one Postgres pool and the tick feed, without waiting for Redis or
PostgreSQL: a web started during an outage answers (503s, health `down`) and serves once they are
back. Shutdown first ends long-polls and WebSocket sessions so in-flight requests can finish inside
the drain window.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from arq.connections import ArqRedis
from redis.asyncio import Redis

from ticker.http.accept import pipe_script
from ticker.http.chain_view import CHAIN_READER, ChainReader
from ticker.http.dependency_watch import OUTAGES, POSTGRES, REDIS, TICK_REDIS, Outages
from ticker.http.inputs import MAX_BODY_BYTES
from ticker.http.middleware.auth import JWT_VERIFIER, JwtVerifier, api_key_middleware
from ticker.http.middleware.errors import DEPENDENCY_ERRORS, error_middleware
from ticker.http.middleware.observe import HttpMetrics, observe_middleware
from ticker.http.middleware.quota import ClientQuota, rate_limit_middleware
from ticker.http.refs import Refs
from ticker.http.routes import (
    accounts_api,
    admin_api,
    chain_api,
    gtt_api,
    instruments_api,
    jobs_api,
    mf_api,
    orders_api,
    page_api,
    portfolio_api,
    postback_api,
    subscriptions_api,
    token_api,
)
from ticker.http.routes.docs_api import add_docs_routes
from ticker.http.routes.health_api import health
from ticker.http.routes.openapi_api import openapi_json
from ticker.http.state import METRICS, SERVICES, SETTINGS, Services
from ticker.http.ws.hub import TickHub
from ticker.http.ws.ticks_socket import ws_ticks
from ticker.infra.orders.audit_batch import AuditBatcher
from ticker.infra.orders.enqueuer import Enqueuer
from ticker.infra.orders.intake import OrderIntake
from ticker.infra.orders.mf_rules import mf_facts
from ticker.infra.orders.validate import Validator
from ticker.infra.queue.enqueue import names_for, queue_client
from ticker.infra.queue.finished import FinishedJobs
from ticker.infra.runtime.prometheus import metrics_handler, new_registry
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import account_store
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.redis import AutoPipeline
from ticker.infra.stores.tick_bus import close_tick_client, tick_bus_url, tick_client, tick_pipeline

LIMITER = web.AppKey("limiter", ClientQuota)


def create_app(settings: Settings) -> web.Application:
    settings.require("redis_url", "database_url")
    metrics = HttpMetrics(new_registry())
    limiter = ClientQuota(names_for(settings), settings.http_rate_limit_per_minute)
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[observe_middleware(metrics), error_middleware, api_key_middleware(settings),
                     rate_limit_middleware(limiter, metrics)],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LIMITER] = limiter
    app[CHAIN_READER] = ChainReader()
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_stop_taking_work)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler(metrics.registry))
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/ws/ticks", ws_ticks)
    add_docs_routes(app)
    for module in (orders_api, jobs_api, subscriptions_api, instruments_api, accounts_api,
                   admin_api, gtt_api, postback_api, portfolio_api, chain_api, token_api, page_api, mf_api):
        app.add_routes(module.routes)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    names = names_for(settings)
    redis = queue_client(settings)  # connects on first use: Redis may be away while we start
    try:
        db = await _open_db(settings)
    except BaseException:
        await redis.aclose()
        raise
    pipe = AutoPipeline(settings.url("redis_url"))
    ticks, tick_pipe = tick_client(settings, redis), tick_pipeline(settings, pipe)
    outages = _outages(redis, db, metrics, ticks)
    app[LIMITER].bind(pipe, outages)
    hub = TickHub(ticks, names, metrics, queue_max=settings.ws_client_queue_max,
                  max_clients=settings.ws_max_clients, outages=outages,
                  dependency=REDIS if ticks is redis else TICK_REDIS,
                  cluster_url=tick_bus_url(settings) if settings.tick_redis_cluster else None)
    refs, audit = Refs(db, settings), AuditBatcher(db)
    enqueue = Enqueuer(names, pipe_script(pipe), on_enqueued=metrics.count_enqueued)
    intake = OrderIntake(db, Validator(db, settings, refs.instruments), audit.record, enqueue, refs.resolve_account,
                         mf_facts=functools.partial(mf_facts, redis, names))
    svc = Services(settings=settings, names=names, redis=redis, db=db, metrics=metrics,
                   accounts=account_store(db, settings), limiter=app[LIMITER],
                   jwt=JwtVerifier(settings), hub=hub, refs=refs, pipe=pipe, ticks=ticks, tick_pipe=tick_pipe,
                   audit=audit, enqueue=enqueue, intake=intake, outages=outages,
                   finished=FinishedJobs(redis, names))
    app[SERVICES] = svc
    app[JWT_VERIFIER] = svc.jwt
    app[OUTAGES] = outages
    outages.start()
    outages.look()
    await hub.start()
    try:
        yield
    finally:
        svc.stopping.set()
        if svc.finished is not None:
            await svc.finished.close()
        await outages.close()
        await hub.close()
        await close_tick_client(tick_pipe, pipe)
        await pipe.close()
        await svc.audit.close()
        await svc.jwt.close()
        await db.close()
        await close_tick_client(ticks, redis)
        await redis.aclose()


async def _open_db(settings: Settings) -> asyncpg.Pool:
    """The Postgres pool; with PostgreSQL away, an empty one whose connections open on first use,
    so the web starts anyway, answers 503s and health `down`, and serves once Postgres is back."""
    url = settings.url("database_url")
    try:
        return await create_pool(url, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    except DEPENDENCY_ERRORS:
        return await create_pool(url, min_size=0, max_size=settings.db_pool_max)


def _outages(redis: ArqRedis, db: asyncpg.Pool, metrics: HttpMetrics, ticks: Redis) -> Outages:
    """Redis and PostgreSQL, and the tick bus's Redis when it is another one."""
    async def ping_postgres() -> None:
        await db.fetchval("SELECT 1")

    def show(dependency: str, up: bool) -> None:
        metrics.dependency_up.labels(dependency).set(1 if up else 0)

    probes = {REDIS: redis.ping, POSTGRES: ping_postgres}
    if ticks is not redis:
        probes[TICK_REDIS] = ticks.ping
    for dependency in probes:
        show(dependency, True)
    return Outages(probes, on_change=show)


async def _stop_taking_work(app: web.Application) -> None:
    """Runs when the listener has closed: end long-polls now and send WebSocket clients away."""
    svc = app.get(SERVICES)
    if svc is None:
        return
    svc.stopping.set()
    await svc.hub.send_away()
