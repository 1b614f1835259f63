"""What every handler can reach: the clients opened at startup, held in one typed object on the app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from arq.connections import ArqRedis

from ticker.core.contracts import Names
from ticker.http.middleware.auth import JwtVerifier
from ticker.http.middleware.observe import HttpMetrics
from ticker.http.middleware.quota import RateLimiter
from ticker.http.outage import Outages
from ticker.http.redis_pipe import RedisPipe
from ticker.http.refs import Refs
from ticker.http.ws.hub import TickHub
from ticker.infra.orders.audit_batch import AuditBatcher
from ticker.infra.orders.enqueue import Enqueuer
from ticker.infra.orders.intake import OrderIntake
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore


@dataclass
class Services:
    settings: Settings
    names: Names
    redis: ArqRedis  # arq's pool: the job queue and a full Redis client at once
    db: asyncpg.Pool
    metrics: HttpMetrics
    accounts: AccountStore
    limiter: RateLimiter
    jwt: JwtVerifier
    hub: TickHub
    refs: Refs
    pipe: RedisPipe  # the hot path's auto-pipelined Redis connection (rate limit, enqueue)
    audit: AuditBatcher  # coalesces queued-order audit rows into group commits
    enqueue: Enqueuer  # every job this process queues, in one round trip down `pipe`
    intake: OrderIntake  # orders, baskets, GTTs, margin previews, replays: validate -> audit -> enqueue
    outages: Outages  # which of Redis and Postgres is down, since when; logs each outage once
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # set on shutdown: end long-polls


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", HttpMetrics)
SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
