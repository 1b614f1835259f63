"""`refresh_portfolio`: positions, holdings, margins, the day's trades and the user's profile (group
"portfolio"), or MF instruments, orders, SIPs and holdings (group "mf"), fetched from Kite and stored
as the snapshots `GET /portfolio/*`, `GET /trades`, `GET /orders/{order_id}/trades`,
`GET /account/profile` and `GET /mf/*` serve (`ticker.core.portfolio`).

It runs on a schedule in market hours (every active account) and after order updates
(`request_refresh`, one account). Every fetch goes through `read_portfolio`, so it shares the
account's "api" rate limit and the short read cache's lock with the other portfolio reads.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from arq import Retry
from arq.worker import func
from pydantic import BaseModel, Field, ValidationError

from ticker.core.contracts import JOB_REFRESH_PORTFOLIO
from ticker.core.portfolio import KINDS_OF_GROUP, RefreshGroup, RefreshPayload, generation_key, refresh_parts
from ticker.infra.kite.limits import RateLimited
from ticker.infra.kite.rest import is_transient
from ticker.infra.orders.validate import known_account_ids
from ticker.infra.queue.enqueue import derived_job_id, enqueue
from ticker.infra.runtime.outage import REDIS_ERRORS
from ticker.jobs.context import Deps, deps
from ticker.jobs.data.portfolio_reads import read_portfolio
from ticker.jobs.kite_clients import AccountUnavailable
from ticker.jobs.orders.runner import backoff, error_text

log = logging.getLogger(__name__)


class PortfolioRefreshResult(BaseModel):
    refreshed: dict[str, dict[str, float]] = Field(default_factory=dict)  # account -> kind -> as_of (epoch s)
    errors: dict[str, str] = Field(default_factory=dict)


async def request_refresh(d: Deps, account_id: str, group: RefreshGroup = "portfolio") -> bool:
    """Enqueue a refresh of the account unless one that has not started yet is queued already."""
    generation = int(await d.redis.get(generation_key(d.names, account_id, group)) or 0)
    job_id = derived_job_id(JOB_REFRESH_PORTFOLIO, *refresh_parts(d.names, account_id, generation, group))
    return await enqueue(d.redis, d.names, JOB_REFRESH_PORTFOLIO, RefreshPayload(account_id=account_id, group=group),
                         job_id=job_id)


async def refresh_quietly(d: Deps, account_ids: set[str]) -> None:
    """`request_refresh` for each account where a lost refresh is no failure (the schedule catches up)."""
    for account_id in sorted(account_ids):
        try:
            await request_refresh(d, account_id)
        except REDIS_ERRORS:
            log.warning("portfolio refresh for %s not queued: Redis unreachable", account_id)


async def next_generation(d: Deps, account_id: str, group: RefreshGroup = "portfolio") -> None:
    """Requests from now on get a job of their own: this one may fetch too early for them."""
    await d.redis.incr(generation_key(d.names, account_id, group))


async def refresh_account(d: Deps, account_id: str, group: RefreshGroup = "portfolio") -> dict[str, float]:
    """Each kind fetched now; an answer another read fetched after this refresh began serves as well
    (it is as new as what every request sharing this refresh asked for)."""
    started = time.time()
    done: dict[str, float] = {}
    for kind in KINDS_OF_GROUP[group]:
        done[kind] = (await read_portfolio(d, account_id, kind, max_age=time.time() - started)).fetched_at
    return done


async def _refresh_one(ctx: dict[str, Any], d: Deps, account_id: str,
                       group: RefreshGroup) -> PortfolioRefreshResult:
    """A requested refresh: its caller polls this job, so a wait for Kite's rate limit or a passing
    failure is retried here rather than reported as done."""
    if account_id not in await known_account_ids(d.db, d.settings):
        raise ValueError(f"unknown Kite account {account_id!r}")
    try:
        return PortfolioRefreshResult(refreshed={account_id: await refresh_account(d, account_id, group)})
    except RateLimited as exc:
        raise Retry(defer=exc.wait_s) from exc
    except Exception as exc:
        if is_transient(exc) and ctx.get("job_try", 1) < d.settings.order_max_tries:
            raise Retry(defer=backoff(d.settings, ctx.get("job_try", 1), exc)) from exc
        raise


async def _refresh_all(d: Deps) -> PortfolioRefreshResult:
    """A scheduled refresh: every active account; one failing is reported, the next slot tries again."""
    result = PortfolioRefreshResult()
    for account_id in await known_account_ids(d.db, d.settings):
        try:
            await next_generation(d, account_id)
            result.refreshed[account_id] = await refresh_account(d, account_id)
        except (RateLimited, AccountUnavailable) as exc:
            result.errors[account_id] = str(exc)
        except Exception as exc:  # one account failing must not stop the others
            if not is_transient(exc):
                raise
            result.errors[account_id] = error_text(exc)
    return result


async def refresh_portfolio(ctx: dict[str, Any], payload: dict[str, Any] | None = None) -> dict[str, Any]:
    d = deps(ctx)
    try:
        p = RefreshPayload.model_validate(payload or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"invalid payload: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    if p.account_id is None:
        return (await _refresh_all(d)).model_dump(mode="json")
    await next_generation(d, p.account_id, p.group)  # first: a run that fails below must not be shared later
    return (await _refresh_one(ctx, d, p.account_id, p.group)).model_dump(mode="json")


FUNCTIONS = [func(refresh_portfolio, name=JOB_REFRESH_PORTFOLIO, timeout=120)]
