"""`fetch_history`: Kite candles for any range, cached in Postgres, with IV and Greeks for options.

A range is split into requests within Kite's per-interval day limits, each paced by the shared
historical rate limit and served by whichever account has budget (`infra/kite/account_choice.py`). Whole
calendar days are fetched and every finished day is cached (`history_store`), so a repeated or
overlapping request asks Kite only for days it has never seen (and for today, which is not over).

For an option, the underlying's candles for the same range are aligned by timestamp and IV plus the
five Greeks are computed per candle from the closes in one vectorized call. The underlying is the
future (Black-76, the default model): the future of the option's own expiry when listed, otherwise
the next one, carried back to the option's expiry; with GREEKS_MODEL=bsm it is the index or stock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ticker.core.history import KITE_MAX_DAYS, max_span_days
from ticker.core.indices import index_symbol
from ticker.infra.kite.account_choice import data_accounts
from ticker.infra.kite.rest import KiteException, is_transient
from ticker.infra.kite.schemas import Candle
from ticker.infra.queue.progress import set_progress
from ticker.jobs.context import Deps, deps
from ticker.jobs.data.history_greeks import option_greeks
from ticker.jobs.data.history_store import Candles, HistoryStore, parse_candles

log = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")  # Kite's timestamps are IST whatever the deployment's time zone
Interval = Literal["minute", "3minute", "5minute", "10minute", "15minute", "30minute", "60minute", "day"]
INTERVAL_SECONDS = {"minute": 60, "3minute": 180, "5minute": 300, "10minute": 600, "15minute": 900,
                    "30minute": 1800, "60minute": 3600, "day": 86_400}
MAX_DAYS = KITE_MAX_DAYS  # days of candles per Kite request, by interval
FETCH_TRIES = 3


class HistoryError(ValueError):
    """A request that cannot be served; the message says why."""


class HistoryPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    instrument_token: int = Field(gt=0, lt=1 << 32)
    from_: datetime = Field(alias="from")
    to: datetime
    interval: Interval
    oi: bool = False
    continuous: bool = False
    greeks: bool = False

    @field_validator("from_", "to")
    @classmethod
    def _ist(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=IST) if v.tzinfo is None else v.astimezone(IST)

    @model_validator(mode="after")
    def _range(self) -> HistoryPayload:
        if self.to <= self.from_:
            raise ValueError("`to` must be after `from`")
        limit = max_span_days(self.interval)  # the same limit the API checks before enqueueing
        if (self.to - self.from_).days > limit:
            raise ValueError(f"the range may span at most {limit} days for {self.interval} candles")
        return self


def parse_payload(payload: dict[str, Any]) -> HistoryPayload:
    try:
        return HistoryPayload.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors())
        raise HistoryError(f"invalid history request: {problems.replace('from_', 'from')}") from None


# --- chunking --------------------------------------------------------------------------------------
def day_runs(days: list[date], max_days: int) -> list[tuple[date, date]]:
    """Consecutive days grouped into (first, last) runs of at most `max_days` days each.

    A run of `max_days` days spans less than `max_days` × 24 h, so Kite accepts it whether it
    checks the calendar difference or the elapsed time."""
    runs: list[tuple[date, date]] = []
    for d in sorted(days):
        if runs and runs[-1][1] == d - timedelta(days=1) and (d - runs[-1][0]).days < max_days:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


def days_between(start: datetime, end: datetime) -> list[date]:
    first, last = start.astimezone(IST).date(), end.astimezone(IST).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# --- fetching --------------------------------------------------------------------------------------
@dataclass
class FetchPlan:
    """One instrument's candles for whole days: those cached and the Kite requests for the rest."""

    token: int
    oi: bool
    continuous: bool
    days: list[date]
    cached: dict[date, Candles]
    runs: list[tuple[date, date]]


class Fetcher:
    """Candles from the cache or from Kite, one paced request per run, reporting progress."""

    def __init__(self, d: Deps, store: HistoryStore, interval: str, job_id: str | None) -> None:
        self.d, self.store, self.interval, self.job_id = d, store, interval, job_id
        self.done, self.total = 0, 1
        self.kite_requests = 0

    async def plan(self, token: int, oi: bool, continuous: bool, days: list[date]) -> FetchPlan:
        cached = await self.store.load(token, self.interval, oi, continuous, days)
        runs = day_runs([d for d in days if d not in cached], MAX_DAYS[self.interval])
        return FetchPlan(token, oi, continuous, days, cached, runs)

    async def complete(self, plan: FetchPlan, today: date) -> Candles:
        """Fetch what the plan lacks, cache every finished day, return all days' candles in order."""
        got = dict(plan.cached)
        for first, last in plan.runs:
            start = datetime.combine(first, time(0, 0), IST)
            end = datetime.combine(last, time(23, 59, 59), IST)
            per_day = parse_candles(await self._call(plan, start, end), plan.oi, first, last)
            await self.store.save(plan.token, self.interval, plan.oi, plan.continuous,
                                  {d: c for d, c in per_day.items() if d < today})
            got.update(per_day)
            await self.step()
        return Candles.concat([got.get(d) or Candles.empty(plan.oi) for d in plan.days])

    async def _call(self, plan: FetchPlan, start: datetime, end: datetime) -> list[Candle]:
        picker = data_accounts(self.d)
        for attempt in range(1, FETCH_TRIES + 1):
            self.kite_requests += 1
            try:
                candles, _ = await picker.call("historical", lambda api: api.historical_data(
                    plan.token, start, end, self.interval, continuous=plan.continuous, oi=plan.oi))
                return candles
            except KiteException as exc:
                if attempt == FETCH_TRIES or not is_transient(exc):
                    raise
                await asyncio.sleep(0.25 * 2 ** attempt)
        raise AssertionError("unreachable")

    async def step(self) -> None:
        self.done += 1
        if self.job_id:
            await set_progress(self.d.redis, self.d.names, self.job_id, min(self.done, self.total), self.total)


# --- instruments -----------------------------------------------------------------------------------
async def instrument(db: asyncpg.Pool, token: int) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM instruments WHERE instrument_token = $1", token)
    if row is None:
        raise HistoryError(f"unknown instrument_token {token}: not in the instrument list "
                           "(refresh instruments if it was listed today)")
    return row


async def underlying_of(db: asyncpg.Pool, option: asyncpg.Record, model: str) -> tuple[asyncpg.Record | None, str]:
    """(instrument, model) to price the option against: the future for black76, else the spot."""
    if model == "black76":
        fut = await db.fetchrow(
            "SELECT * FROM instruments WHERE name = $1 AND instrument_type = 'FUT' AND exchange = $2"
            " AND expiry >= $3 ORDER BY expiry LIMIT 1", option["name"], option["exchange"], option["expiry"])
        if fut is not None:
            return fut, "black76"
    spot = await db.fetchrow(
        "SELECT * FROM instruments WHERE (segment = 'INDICES' AND tradingsymbol = $1)"
        " OR (exchange = 'NSE' AND instrument_type = 'EQ' AND tradingsymbol = $2)"
        " ORDER BY segment = 'INDICES' DESC, is_active DESC LIMIT 1",
        index_symbol(option["name"]), option["name"])
    return spot, "bsm"


# --- the job -----------------------------------------------------------------------------------------
class HistoryResult(BaseModel):
    instrument_token: int
    tradingsymbol: str
    interval: str
    columns: list[str]
    candles: list[list[Any]]
    count: int
    greeks: bool
    model: str | None = None
    underlying_token: int | None = None
    kite_requests: int


async def fetch_history(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    d = deps(ctx)
    req = parse_payload(payload)
    ins = await instrument(d.db, req.instrument_token)  # every check happens before any Kite call
    today = datetime.now(IST).date()
    store = HistoryStore(d.db)
    with_greeks = req.greeks and ins["instrument_type"] in ("CE", "PE")
    und, model = (await underlying_of(d.db, ins, d.settings.greeks_model)) if with_greeks else (None, None)
    if with_greeks and und is None:
        raise HistoryError(f"no underlying found for {ins['tradingsymbol']} to compute Greeks against")

    fetcher = Fetcher(d, store, req.interval, ctx.get("job_id"))
    days = days_between(req.from_, req.to)
    plan = await fetcher.plan(req.instrument_token, req.oi, req.continuous, days)
    und_plan = await fetcher.plan(und["instrument_token"], False, False, days) if und else None
    fetcher.total = len(plan.runs) + (len(und_plan.runs) if und_plan else 0) + 1  # requests + assembly

    lo, hi = req.from_.timestamp(), req.to.timestamp()
    candles = (await fetcher.complete(plan, today)).between(lo, hi)
    columns = ["date", "open", "high", "low", "close", "volume"] + (["oi"] if req.oi else [])
    table = candles.rows()
    if und_plan is not None and und is not None and model is not None:
        und_candles = (await fetcher.complete(und_plan, today)).between(lo, hi)
        extra = option_greeks(ins, und, model, candles, und_candles, INTERVAL_SECONDS[req.interval], d.settings)
        columns += list(extra)
        table = [row + [_num(extra[c][i]) for c in extra] for i, row in enumerate(table)]
    await fetcher.step()
    log.info("history served", extra={"token": req.instrument_token, "candles": len(table),
                                      "kite_requests": fetcher.kite_requests})
    return HistoryResult(
        instrument_token=req.instrument_token, tradingsymbol=ins["tradingsymbol"], interval=req.interval,
        columns=columns, candles=table, count=len(table), greeks=und is not None, model=model,
        underlying_token=und["instrument_token"] if und else None, kite_requests=fetcher.kite_requests,
    ).model_dump(mode="json")


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


FUNCTIONS = [fetch_history]
