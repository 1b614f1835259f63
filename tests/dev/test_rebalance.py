"""Strike window planning (pure) and the rebalancer job on real Postgres and Redis."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import orjson
import pytest

from tests.waiting import confirm_subscribed, next_messages
from ticker.core.contracts import JOB_REBALANCE_STRIKES
from ticker.core.strikes import ChainRow, atm_strike, diff, plan
from ticker.infra.queue.enqueue import create_queue
from ticker.jobs.context import DEPS_KEY, build_deps, close_deps
from ticker.jobs.data.history_fetch import underlying_of
from ticker.jobs.data.rebalance import rebalance_strikes

TODAY = date(2026, 11, 20)


def chain(name_base: int, expiries: list[date], strikes: list[float]) -> list[ChainRow]:
    rows, token = [], name_base
    for e in expiries:
        for k in strikes:
            for typ in ("CE", "PE"):
                token += 256
                rows.append(ChainRow(token, e, k, typ))
    return rows


def test_atm_is_the_nearest_listed_strike() -> None:
    strikes = [100.0, 150.0, 200.0]
    assert atm_strike(strikes, 149) == 150
    assert atm_strike(strikes, 125) == 100  # a tie goes low
    assert atm_strike(strikes, 10) == 100 and atm_strike(strikes, 999) == 200


def test_plan_takes_next_expiries_and_levels_each_side() -> None:
    e1, e2, e3 = TODAY + timedelta(days=4), TODAY + timedelta(days=11), TODAY + timedelta(days=18)
    rows = chain(2, [TODAY - timedelta(days=3), e1, e2, e3], [float(k) for k in range(23000, 25050, 50)])
    windows = plan(rows, spot=24012.0, today=TODAY, levels=2, expiries=2)
    assert [w.expiry for w in windows] == [e1, e2]
    assert windows[0].atm == 24000 and windows[0].strikes == (23900, 23950, 24000, 24050, 24100)
    assert all(len(w.tokens) == 10 for w in windows)  # 5 strikes × CE/PE


def test_diff_keeps_what_stays_in_range() -> None:
    d = diff({1, 2, 3}, {2, 3, 4})
    assert (d.add, d.remove, d.keep) == ({4}, {1}, {2, 3})


@pytest.fixture
async def job_ctx(settings):
    queue = await create_queue(settings)
    deps = await build_deps(settings, queue)
    yield {DEPS_KEY: deps}
    await close_deps(deps)
    await queue.aclose()


async def _seed(db, expiry1: date, expiry2: date) -> dict[float, list[int]]:
    await db.execute("DELETE FROM subscriptions; DELETE FROM instruments")
    rows = [(256265, 1001, "NIFTY 50", "NIFTY 50", 24000.0, None, 0.0, 0.05, 1, "INDEX", "INDICES", "NSE"),
            (9000002, 35156, "NIFTY26NOVFUT", "NIFTY", 24100.0, expiry2, 0.0, 0.05, 75, "FUT", "NFO-FUT", "NFO")]
    by_strike: dict[float, list[int]] = {}
    token = 10_000_002
    for e in (expiry1, expiry2):
        for k in range(23000, 25050, 50):
            for typ in ("CE", "PE"):
                token += 256
                rows.append((token, token >> 8, f"NIFTY{k}{typ}{e:%d%m}", "NIFTY", 0.0, e, float(k), 0.05, 75, typ,
                             "NFO-OPT", "NFO"))
                if e == expiry1:
                    by_strike.setdefault(float(k), []).append(token)
    await db.executemany(
        "INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, name, last_price, expiry,"
        " strike, tick_size, lot_size, instrument_type, segment, exchange) VALUES"
        " ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)", rows)
    return by_strike


async def test_rebalancer_moves_the_window_without_churning(job_ctx, db, redis, names, settings) -> None:
    assert rebalance_strikes.__name__ == JOB_REBALANCE_STRIKES
    today = datetime.now(settings.tz).date()
    by_strike = await _seed(db, today + timedelta(days=2), today + timedelta(days=9))
    await db.execute("INSERT INTO subscriptions (instrument_token, source) VALUES ($1, 'api')", by_strike[23000.0][0])
    await redis.hset(names.latest, "256265", orjson.dumps({"last_price": 24010.0}))
    pubsub = redis.pubsub()
    await pubsub.subscribe(names.control)
    await confirm_subscribed(pubsub)  # listening before the job publishes

    first = await rebalance_strikes(job_ctx, {"levels": 2, "expiries": 2})
    # 5 strikes × 2 types × 2 expiries, plus the index and the near future
    assert first["added"] == 22 and first["removed"] == 0
    assert first["underlyings"][0]["atm"] == {(today + timedelta(days=2)).isoformat(): 24000.0,
                                               (today + timedelta(days=9)).isoformat(): 24000.0}
    stamps = dict(await db.fetch("SELECT instrument_token, updated_at FROM subscriptions WHERE status='active'"))

    await redis.hset(names.latest, "256265", orjson.dumps({"last_price": 24060.0}))  # ATM moves up one strike
    second = await rebalance_strikes(job_ctx, {"levels": 2, "expiries": 2})
    assert (second["added"], second["removed"], second["kept"]) == (4, 4, 18)
    after = dict(await db.fetch("SELECT instrument_token, updated_at FROM subscriptions WHERE status='active'"))
    kept = set(stamps) & set(after)
    assert all(stamps[t] == after[t] for t in kept), "a strike that stayed in range was touched"
    assert set(by_strike[23900.0]).isdisjoint(after) and set(by_strike[24100.0]) <= set(after)
    assert by_strike[23000.0][0] in after, "the user's own subscription must stay"

    messages = [orjson.loads(m) for m in await next_messages(pubsub, 2)]
    await pubsub.aclose()
    assert [m["kind"] for m in messages] == ["subscriptions", "subscriptions"]


async def test_niftynxt50_maps_to_its_index_for_the_rebalancer_and_history(job_ctx, db, redis, names,
                                                                              settings) -> None:
    """NIFTYNXT50's derivatives carry a name that is not its index's tradingsymbol (NIFTY NEXT 50)."""
    expiry = datetime.now(settings.tz).date() + timedelta(days=2)
    index_token = 270857
    await db.execute("DELETE FROM subscriptions; DELETE FROM instruments")
    rows = [(index_token, 1058, "NIFTY NEXT 50", "NIFTY NEXT 50", 68000.0, None, 0.0, 0.05, 1, "INDEX", "INDICES",
             "NSE")]
    token = 20_000_002
    for k in range(67500, 68600, 100):
        for typ in ("CE", "PE"):
            token += 256
            rows.append((token, token >> 8, f"NIFTYNXT50{k}{typ}", "NIFTYNXT50", 0.0, expiry, float(k), 0.05, 25, typ,
                         "NFO-OPT", "NFO"))
    await db.executemany(
        "INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, name, last_price, expiry,"
        " strike, tick_size, lot_size, instrument_type, segment, exchange) VALUES"
        " ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)", rows)
    await redis.hset(names.latest, str(index_token), orjson.dumps({"last_price": 68020.0}))

    result = await rebalance_strikes(job_ctx, {"underlyings": ["NIFTYNXT50"], "levels": 1, "expiries": 1})
    (window,) = result["underlyings"]
    assert window["skipped"] is None and window["spot"] == 68020.0
    assert window["atm"] == {expiry.isoformat(): 68000.0}
    active = {r["instrument_token"] for r in await db.fetch(
        "SELECT instrument_token FROM subscriptions WHERE status = 'active'")}
    assert index_token in active and len(active) == 1 + 3 * 2  # the index, ATM ± 1 calls and puts

    option = await db.fetchrow("SELECT * FROM instruments WHERE name = 'NIFTYNXT50' AND instrument_type = 'CE' LIMIT 1")
    spot, model = await underlying_of(db, option, "bsm")
    assert model == "bsm" and spot is not None and spot["instrument_token"] == index_token
