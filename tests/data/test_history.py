"""fetch_history against the stand-in: 90 days of minute candles for an option in two Kite requests,
IV equal to the stand-in's vol model, Greeks on every candle, the cache, and checks before any call."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta

import asyncpg
import numpy as np
import pytest
from redis.asyncio import Redis

from tests.data.conftest import DataEnv
from ticker.infra.kitesim.market import YEAR_SECONDS, model_vol
from ticker.infra.kitesim.universe import expiry_epoch
from ticker.infra.queue.progress import get_progress
from ticker.jobs.data.history_fetch import IST, HistoryError, fetch_history
from ticker.jobs.data.instrument_refresh import refresh_instruments

HISTORY = "GET /instruments/historical/{token}/{interval}"
GREEKS = ("iv", "delta", "gamma", "theta", "vega", "rho")


@pytest.fixture
async def loaded(data_env: DataEnv, private_db: asyncpg.Pool) -> DataEnv:
    await private_db.execute("TRUNCATE instruments, history_cache")
    await refresh_instruments(data_env.ctx, {})
    return data_env


async def _monthly_atm_call(db: asyncpg.Pool) -> asyncpg.Record:
    """A NIFTY call near the money, on the farthest expiry that also has a future (plenty of time value)."""
    spot = await db.fetchval("SELECT last_price FROM instruments WHERE tradingsymbol = 'NIFTY 50'")
    return await db.fetchrow(
        "SELECT o.* FROM instruments o JOIN instruments f ON f.name = o.name AND f.expiry = o.expiry"
        " AND f.instrument_type = 'FUT' WHERE o.name = 'NIFTY' AND o.instrument_type = 'CE'"
        " ORDER BY o.expiry DESC, abs(o.strike - $1) LIMIT 1", spot)


def _ninety_days() -> dict:
    last = datetime.now(IST).date() - timedelta(days=1)
    first = last - timedelta(days=89)
    return {"from": datetime.combine(first, time(0, 0)).isoformat(),
            "to": datetime.combine(last, time(23, 59, 59)).isoformat(), "interval": "minute"}


async def test_ninety_days_of_minutes_with_greeks(loaded: DataEnv, redis: Redis) -> None:
    env = loaded
    option = await _monthly_atm_call(env.deps.db)
    request = {"instrument_token": option["instrument_token"], **_ninety_days()}

    before = env.kite_requests(HISTORY)
    plain = await fetch_history(env.ctx, {**request, "greeks": False})
    assert env.kite_requests(HISTORY) - before == 2  # 90 days in Kite's 60-day minute windows
    assert plain["count"] > 20 * 375 and plain["greeks"] is False

    ctx = env.ctx
    before = env.kite_requests(HISTORY)
    result = await fetch_history(ctx, {**request, "greeks": True})
    assert env.kite_requests(HISTORY) - before == 2  # the option's days are cached; the future's are not
    assert result["kite_requests"] == 2 and result["model"] == "black76"
    assert await get_progress(redis, env.deps.names, ctx["job_id"]) == {"done": 3, "total": 3}

    cols = {name: i for i, name in enumerate(result["columns"])}
    rows = result["candles"]
    assert len(rows) == plain["count"]
    assert all(row[cols[g]] is not None and math.isfinite(row[cols[g]]) for row in rows for g in GREEKS)
    assert all(0 < row[cols["delta"]] < 1 for row in rows)

    stamps = np.array([datetime.fromisoformat(r[0]).timestamp() for r in rows])
    t = (expiry_epoch(option["expiry"]) - stamps) / YEAR_SECONDS
    forward = np.array([r[cols["underlying"]] for r in rows])
    expected = model_vol("NIFTY", option["strike"], forward, t)
    iv = np.array([r[cols["iv"]] for r in rows])
    assert np.max(np.abs(iv - expected)) < 1e-4  # the stand-in rounds prices to the 0.05 tick

    before = env.kite_requests(HISTORY)
    again = await fetch_history(env.ctx, {**request, "greeks": True})
    assert env.kite_requests(HISTORY) == before and again["kite_requests"] == 0
    assert again["candles"] == rows


async def test_part_of_a_cached_range_is_served_without_kite(loaded: DataEnv) -> None:
    env = loaded
    index = await env.deps.db.fetchval("SELECT instrument_token FROM instruments WHERE tradingsymbol = 'NIFTY 50'")
    week = {"instrument_token": index, "interval": "5minute",
            "from": "2024-03-04T09:15:00+05:30", "to": "2024-03-08T15:30:00+05:30"}
    full = await fetch_history(env.ctx, week)
    assert full["kite_requests"] == 1 and full["greeks"] is False
    before = env.kite_requests(HISTORY)
    middle = await fetch_history(env.ctx, {**week, "from": "2024-03-05T10:00:00", "to": "2024-03-06T11:00:00"})
    assert env.kite_requests(HISTORY) == before
    assert middle["candles"][0][0] == "2024-03-05T10:00:00+05:30"
    assert middle["candles"][-1][0] == "2024-03-06T11:00:00+05:30"
    assert all(row in full["candles"] for row in middle["candles"])


@pytest.mark.parametrize(("change", "message"), [
    ({"instrument_token": 999_999_999}, "unknown instrument_token 999999999"),
    ({"interval": "2minute"}, "interval"),
    ({"to": "2024-01-01T09:15:00"}, "`to` must be after `from`"),
])
async def test_bad_requests_fail_before_any_kite_call(loaded: DataEnv, change: dict, message: str) -> None:
    env = loaded
    index = await env.deps.db.fetchval("SELECT instrument_token FROM instruments WHERE tradingsymbol = 'NIFTY 50'")
    request = {"instrument_token": index, "interval": "minute", "from": "2024-01-02T09:15:00",
               "to": "2024-01-03T15:30:00", **change}
    before = env.kite_requests(HISTORY)
    with pytest.raises(HistoryError, match=message):
        await fetch_history(env.ctx, request)
    assert env.kite_requests(HISTORY) == before


def test_days_are_weekday_agnostic() -> None:
    # Weekends and holidays are asked for like any day (Kite has special sessions); they cache as empty.
    from ticker.jobs.data.history_fetch import day_runs

    saturday = date(2024, 3, 9)
    assert day_runs([saturday, saturday + timedelta(days=1)], 60) == [(saturday, saturday + timedelta(days=1))]
