"""`rebalance_strikes`: keep the option window (ATM ± OTM_LEVELS, next OPTION_EXPIRY_WINDOW expiries)
subscribed for each configured underlying, plus the index and its near future.

Only rows this job created (`source = 'rebalancer'`) are ever removed; a user's own subscriptions are
left alone. The change is announced on the control channel so the streamer reconciles.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field

from ticker.core.contracts import ControlMessage
from ticker.core.indices import index_symbol
from ticker.core.strikes import ChainRow, diff, plan
from ticker.infra.kite.limits import Budget, KiteLimiter, RateLimited, budget_for
from ticker.infra.kite.rest import KiteApi, KiteException
from ticker.infra.queue.control import publish_control
from ticker.infra.stores.accounts import load_accounts
from ticker.jobs.context import Deps, deps

log = logging.getLogger(__name__)
SOURCE = "rebalancer"


class RebalancePayload(BaseModel, extra="forbid"):
    underlyings: list[str] | None = None
    levels: int | None = Field(None, ge=0, le=100)
    expiries: int | None = Field(None, gt=0, le=12)


class UnderlyingWindow(BaseModel):
    name: str
    spot: float | None
    atm: dict[str, float] = Field(default_factory=dict)  # expiry -> ATM strike
    tokens: int = 0
    skipped: str | None = None


class RebalanceResult(BaseModel):
    added: int
    removed: int
    kept: int
    underlyings: list[UnderlyingWindow]


async def rebalance_strikes(ctx: dict[str, Any], payload: dict[str, Any] | None = None) -> dict[str, Any]:
    d = deps(ctx)
    req = RebalancePayload.model_validate(payload or {})
    names = req.underlyings or [n.strip() for n in d.settings.rebalance_underlyings.split(",") if n.strip()]
    levels = d.settings.otm_levels if req.levels is None else req.levels
    expiries = req.expiries or d.settings.option_expiry_window
    today = datetime.now(d.settings.tz).date()

    desired: set[int] = set()
    windows = []
    for name in names:
        tokens, info = await _desired_for(d, name, today, levels, expiries)
        desired |= tokens
        windows.append(info)

    current = {r["instrument_token"] for r in await d.db.fetch(
        "SELECT instrument_token FROM subscriptions WHERE source = $1 AND status = 'active'", SOURCE)}
    change = diff(current, desired)
    await _apply(d, change.add, change.remove)
    if change.add or change.remove:
        await publish_control(d.redis, d.names, ControlMessage(
            kind="subscriptions", tokens=sorted(change.add | change.remove), reason="strike window moved"))
    log.info("strikes rebalanced", extra={"added": len(change.add), "removed": len(change.remove),
                                          "kept": len(change.keep)})
    return RebalanceResult(added=len(change.add), removed=len(change.remove), kept=len(change.keep),
                           underlyings=windows).model_dump(mode="json")


async def _desired_for(d: Deps, name: str, today: date, levels: int, expiries: int) -> tuple[set[int], UnderlyingWindow]:
    index = await d.db.fetchrow(
        "SELECT instrument_token, last_price FROM instruments WHERE segment = 'INDICES' AND tradingsymbol = $1"
        " AND is_active", index_symbol(name))
    future = await d.db.fetchrow(
        "SELECT instrument_token, last_price FROM instruments WHERE name = $1 AND instrument_type = 'FUT'"
        " AND is_active AND expiry >= $2 ORDER BY expiry LIMIT 1", name, today)
    rows = [ChainRow(r["instrument_token"], r["expiry"], r["strike"], r["instrument_type"]) for r in await d.db.fetch(
        "SELECT instrument_token, expiry, strike, instrument_type FROM instruments WHERE name = $1"
        " AND instrument_type IN ('CE', 'PE') AND is_active AND expiry >= $2", name, today)]
    spot = await _spot(d, name, index, future)
    info = UnderlyingWindow(name=name, spot=spot)
    tokens = {r["instrument_token"] for r in (index, future) if r is not None}
    if spot is None or not rows:
        info.skipped = "no spot price" if spot is None else "no option chain in instruments"
        info.tokens = len(tokens)
        return tokens, info
    for w in plan(rows, spot, today, levels, expiries):
        tokens |= w.tokens
        info.atm[w.expiry.isoformat()] = w.atm
    info.tokens = len(tokens)
    return tokens, info


async def _spot(d: Deps, name: str, index: Any, future: Any) -> float | None:
    """Latest streamed price first, then Kite's LTP, then the dump's last price."""
    for row in (index, future):
        if row is None:
            continue
        raw = await d.ticks.hget(d.names.latest, str(row["instrument_token"]))
        if raw:
            price = orjson.loads(raw).get("last_price")
            if price:
                return float(price)
    if index is not None:
        price = await _kite_ltp(d, f"NSE:{index_symbol(name)}")
        if price:
            return price
    for row in (index, future):
        if row is not None and row["last_price"]:
            return float(row["last_price"])
    return None


async def _kite_ltp(d: Deps, instrument: str) -> float | None:
    limiter = KiteLimiter(d.redis, d.names, d.settings)
    for account in await load_accounts(d.accounts if d.accounts.configured else None, d.settings):
        token = account.secret("access_token")
        if not token:
            continue
        budget = budget_for(account.account_id, account.secret("user_id"))

        async def pace(budget: Budget = budget) -> None:  # Kite's quote limit: 1 call per second
            await limiter.acquire(budget, "quote", max_wait=d.settings.rate_wait_max_seconds)

        try:
            data = await KiteApi(d.kite_http, account.api_key, token).ltp([instrument], pace=pace)
        except (KiteException, RateLimited) as exc:
            log.warning("ltp lookup failed", extra={"account_id": account.account_id, "error": str(exc)})
            continue
        quote = data.get(instrument)
        if quote is not None and quote.last_price is not None:
            return quote.last_price
    return None


async def _apply(d: Deps, add: frozenset[int], remove: frozenset[int]) -> None:
    async with d.db.acquire() as conn, conn.transaction():
        if add:
            # A user's own row for the same token stays theirs; only new or rebalancer rows change.
            await conn.execute(
                """
                INSERT INTO subscriptions (instrument_token, requested_mode, status, source)
                SELECT t, 'FULL', 'active', $2 FROM unnest($1::bigint[]) AS t
                ON CONFLICT (instrument_token) DO UPDATE SET status = 'active', deactivated_reason = NULL,
                    updated_at = now()
                WHERE subscriptions.source = $2
                """, list(add), SOURCE)
        if remove:
            await conn.execute(
                "UPDATE subscriptions SET status = 'inactive', deactivated_reason = 'outside strike window',"
                " updated_at = now() WHERE instrument_token = ANY($1::bigint[]) AND source = $2",
                list(remove), SOURCE)


FUNCTIONS = [rebalance_strikes]
