"""Portfolio reads (positions, holdings, margins, order book, trades, profile, GTTs, mutual funds) as
short jobs with a Redis cache.

Many clients polling the same account share one Kite call per `PORTFOLIO_CACHE_SECONDS`, and every
call goes through the account's shared "api" rate limit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from arq import Retry
from arq.worker import func
from pydantic import BaseModel, Field, ValidationError, model_validator

from ticker.core.contracts import JOB_PORTFOLIO, Names
from ticker.core.portfolio import GROUP_OF_KIND, SNAPSHOT_TTL_SECONDS, PortfolioSnapshot, snapshot_key
from ticker.infra.kite.limits import RateLimited
from ticker.infra.kite.rest import KiteApi, is_transient
from ticker.infra.kite.schemas import as_json
from ticker.infra.orders.validate import resolve_account_id
from ticker.jobs.context import Deps, deps
from ticker.jobs.kite_clients import kite_clients
from ticker.jobs.orders.runner import backoff, limiter

PortfolioKind = Literal["positions", "holdings", "margins", "orders", "trades", "profile", "gtts", "gtt",
                        "mf_instruments", "mf_orders", "mf_sips", "mf_holdings"]
FETCH_LOCK_SECONDS = 5.0


class PortfolioPayload(BaseModel, extra="forbid"):
    account_id: str | None = Field(None, min_length=1, max_length=64)
    kind: PortfolioKind
    max_age_seconds: float | None = Field(None, ge=0, le=3600)  # None: PORTFOLIO_CACHE_SECONDS
    trigger_id: int | None = Field(None, gt=0)  # kind "gtt": which one

    @model_validator(mode="after")
    def _one_gtt(self) -> PortfolioPayload:
        if (self.kind == "gtt") != (self.trigger_id is not None):
            raise ValueError("trigger_id is required exactly for kind gtt")
        return self


class PortfolioResult(BaseModel):
    account_id: str
    kind: PortfolioKind
    trigger_id: int | None = None
    data: Any
    fetched_at: float
    cached: bool


def cache_key(names: Names, account_id: str, kind: str, trigger_id: int | None = None) -> str:
    return names.key("portfolio", account_id, kind, *([str(trigger_id)] if trigger_id is not None else []))


async def _fetch(api: KiteApi, kind: PortfolioKind, trigger_id: int | None) -> Any:
    """Kite's answer as the JSON document Kite sent (what clients and the cache hold)."""
    if kind == "gtt":
        return (await api.gtt(trigger_id or 0)).to_json()
    calls = {"positions": api.positions, "holdings": api.holdings, "margins": api.margins,
             "orders": api.orders, "trades": api.trades, "profile": api.profile, "gtts": api.gtts,
             "mf_instruments": api.mf_instruments, "mf_orders": api.mf_orders, "mf_sips": api.mf_sips,
             "mf_holdings": api.mf_holdings}
    return as_json(await calls[kind]())


async def store_snapshot(d: Deps, account_id: str, kind: str, data: Any, fetched_at: float) -> None:
    snapshot = PortfolioSnapshot.model_validate({"account_id": account_id, "kind": kind, "data": data,
                                                 "as_of": datetime.fromtimestamp(fetched_at, UTC)})
    await d.redis.set(snapshot_key(d.names, account_id, kind), snapshot.model_dump_json(),
                      ex=SNAPSHOT_TTL_SECONDS)


async def _cached(d: Deps, key: str, max_age: float) -> PortfolioResult | None:
    raw = await d.redis.get(key)
    if raw:
        hit = orjson.loads(raw)
        if time.time() - hit["fetched_at"] <= max_age:
            return PortfolioResult(**hit, cached=True)
    return None


RELEASE_IF_OURS = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


async def read_portfolio(d: Deps, account_id: str, kind: PortfolioKind, max_age: float,
                         trigger_id: int | None = None) -> PortfolioResult:
    """From the cache when fresh enough; else one job fetches while the others wait for its result."""
    key = cache_key(d.names, account_id, kind, trigger_id)
    if (hit := await _cached(d, key, max_age)) is not None:
        return hit
    fetching, token = key + ":fetching", uuid.uuid4().hex
    owned = bool(await d.redis.set(fetching, token, nx=True, px=int(FETCH_LOCK_SECONDS * 1000)))
    if not owned:
        for _ in range(int(FETCH_LOCK_SECONDS / 0.05)):
            await asyncio.sleep(0.05)
            if (hit := await _cached(d, key, max_age)) is not None:
                return hit
    try:
        clients = kite_clients(d)
        await limiter(d).acquire(await clients.budget(account_id), "api", max_wait=d.settings.rate_wait_max_seconds)
        data = await _fetch(await clients.api(account_id), kind, trigger_id)
        doc = {"account_id": account_id, "kind": kind, "trigger_id": trigger_id, "data": data,
               "fetched_at": time.time()}
        ttl_ms = max(int(d.settings.portfolio_cache_seconds * 1000), 1) * 10  # kept a while for max_age callers
        await d.redis.set(key, orjson.dumps(doc), px=ttl_ms)
        if kind in GROUP_OF_KIND:  # every fresh answer is also the snapshot GET /portfolio/* (...) serves
            await store_snapshot(d, account_id, kind, data, doc["fetched_at"])
    finally:
        if owned:  # only our own lock: after a wait ran out, the lock may be another job's by now
            await d.redis.eval(RELEASE_IF_OURS, 1, fetching, token)
    return PortfolioResult(**doc, cached=False)


async def portfolio(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    d = deps(ctx)
    try:
        p = PortfolioPayload.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"invalid payload: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    account_id = await resolve_account_id(d.db, d.settings, p.account_id)
    max_age = d.settings.portfolio_cache_seconds if p.max_age_seconds is None else p.max_age_seconds
    try:
        return (await read_portfolio(d, account_id, p.kind, max_age, p.trigger_id)).model_dump(mode="json")
    except RateLimited as exc:
        raise Retry(defer=exc.wait_s) from exc
    except Exception as exc:
        if is_transient(exc) and ctx.get("job_try", 1) < d.settings.order_max_tries:
            raise Retry(defer=backoff(d.settings, ctx.get("job_try", 1), exc)) from exc
        raise


FUNCTIONS = [func(portfolio, name=JOB_PORTFOLIO, timeout=60)]
