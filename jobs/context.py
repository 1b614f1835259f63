"""What every job gets: one set of shared clients per worker process, built at worker start-up.

arq hands each job a `ctx` dict; `deps(ctx)` returns the typed view of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
from arq.connections import ArqRedis
from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.infra.kite.breaker import CircuitBreaker
from ticker.infra.kite.egress import egress_from
from ticker.infra.kite.limits import KiteLimiter
from ticker.infra.kite.rest import KiteHttp
from ticker.infra.queue.enqueue import names_for
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore, account_store
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.tick_bus import close_tick_client, tick_client

if TYPE_CHECKING:  # built on first use by the modules that define them, which import this one
    from ticker.infra.kite.account_choice import DataAccounts
    from ticker.infra.kite.clients import KiteClients


@dataclass
class Deps:
    settings: Settings
    names: Names
    redis: ArqRedis  # arq's pool is a full redis client as well as the queue
    db: asyncpg.Pool
    kite_http: KiteHttp
    accounts: AccountStore
    limiter: KiteLimiter  # Kite's rate limits, shared by every worker through Redis
    breaker: CircuitBreaker  # per-account circuit breaker, shared the same way
    ticks: Redis  # the tick bus (infra.stores.tick_bus): order updates, latest ticks; `redis` unless apart
    kite_clients: KiteClients | None = None  # account -> Kite client cache (`jobs.kite_clients`)
    data_accounts: DataAccounts | None = None  # which account serves data reads (`account_choice`)


DEPS_KEY = "deps"


async def build_deps(settings: Settings, redis: ArqRedis) -> Deps:
    pool = await create_pool(settings.url("database_url"), min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    names = names_for(settings)
    return Deps(
        settings=settings,
        names=names,
        redis=redis,
        db=pool,
        kite_http=KiteHttp(settings.kite_root, timeout=settings.kite_request_timeout, egress=egress_from(settings)),
        accounts=account_store(pool, settings),
        limiter=KiteLimiter(redis, names, settings),
        breaker=CircuitBreaker(redis, names, settings),
        ticks=tick_client(settings, redis),
    )


async def close_deps(deps: Deps) -> None:
    await deps.kite_http.close()
    await deps.db.close()
    await close_tick_client(deps.ticks, deps.redis)


def deps(ctx: dict[str, Any]) -> Deps:
    return ctx[DEPS_KEY]
