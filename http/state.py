"""What every handler can reach: the clients opened at startup, held in one typed object on the app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from arq.connections import ArqRedis
from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.http.dependency_watch import Outages
from ticker.http.middleware.auth import JwtVerifier
from ticker.http.middleware.observe import HttpMetrics
from ticker.http.middleware.quota import ClientQuota
from ticker.http.refs import Refs
from ticker.http.ws.hub import TickHub
from ticker.infra.orders.audit_batch import AuditBatcher
from ticker.infra.orders.enqueuer import Enqueuer
from ticker.infra.orders.intake import OrderIntake
from ticker.infra.queue.finished import FinishedJobs
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore
from ticker.infra.stores.redis import AutoPipeline


@dataclass
class Services:
    settings: Settings
    names: Names
    redis: ArqRedis  # arq's pool: the job queue and a full Redis client at once
    db: asyncpg.Pool
    metrics: HttpMetrics
    accounts: AccountStore
    limiter: ClientQuota
    jwt: JwtVerifier
    hub: TickHub
    refs: Refs
    pipe: AutoPipeline  # the hot path's Redis calls, batched into pipelines (rate limit, enqueue)
    ticks: Redis  # the tick bus (infra.stores.tick_bus): latest ticks, history, order updates; `redis` unless apart
    tick_pipe: AutoPipeline  # batched reads of the tick bus (chain snapshots); `pipe` unless apart
    audit: AuditBatcher  # coalesces queued-order audit rows into group commits
    enqueue: Enqueuer  # every job this process queues, in one round trip down `pipe`
    intake: OrderIntake  # orders, baskets, GTTs, margin previews, replays: validate -> audit -> enqueue
    outages: Outages  # which of Redis and Postgres is down, since when; logs each outage once
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # set on shutdown: end long-polls
    finished: FinishedJobs | None = None  # wakes status long-polls when a worker finishes their job


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", HttpMetrics)
SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
