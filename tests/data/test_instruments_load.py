"""load_instruments against a real Postgres: upsert counts, retirement, subscriptions, safety."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import asyncpg
import pytest

from tests.data.dumps import dump, universe
from ticker.core.instruments import Instrument, InstrumentError
from ticker.jobs.data.instrument_refresh import load_instruments

TODAY = date(2030, 3, 4)


@pytest.fixture(autouse=True)
async def _empty(private_db: asyncpg.Pool) -> None:
    await private_db.execute("TRUNCATE instruments, subscriptions")


async def _active(pool: asyncpg.Pool) -> set[int]:
    return {r[0] for r in await pool.fetch("SELECT instrument_token FROM instruments WHERE is_active")}


async def test_first_load_inserts_every_row_and_second_changes_nothing(private_db: asyncpg.Pool) -> None:
    rows = universe(TODAY)
    first = await load_instruments(private_db, dump(rows), TODAY)
    assert (first.rows, first.inserted, first.updated, first.retired) == (len(rows), len(rows), 0, 0)
    assert await _active(private_db) == {r.instrument_token for r in rows}
    stamp = await private_db.fetchval("SELECT max(updated_at) FROM instruments")

    second = await load_instruments(private_db, dump(rows), TODAY)
    assert (second.inserted, second.updated, second.retired, second.unchanged) == (0, 0, 0, len(rows))
    assert not second.changed
    assert await private_db.fetchval("SELECT max(updated_at) FROM instruments") == stamp


async def test_values_round_trip(private_db: asyncpg.Pool) -> None:
    rows = universe(TODAY, n_strikes=2)
    await load_instruments(private_db, dump(rows), TODAY)
    stored = await private_db.fetch(
        "SELECT instrument_token, exchange_token, tradingsymbol, name, last_price, expiry, strike,"
        " tick_size, lot_size, instrument_type, segment, exchange FROM instruments")
    assert {Instrument(**dict(r)) for r in stored} == set(rows)


async def test_changed_added_and_missing_rows(private_db: asyncpg.Pool) -> None:
    rows = universe(TODAY)
    await load_instruments(private_db, dump(rows), TODAY)
    gone, kept, changed = rows[5], rows[6], rows[7]
    await private_db.executemany(
        "INSERT INTO subscriptions (instrument_token) VALUES ($1)",
        [(gone.instrument_token,), (kept.instrument_token,)])
    new = changed.model_copy(update={"instrument_token": changed.instrument_token + 256 * 9000,
                                     "exchange_token": changed.exchange_token + 9000,
                                     "tradingsymbol": changed.tradingsymbol + "X"})
    next_rows = [r if r is not changed else r.model_copy(update={"lot_size": 65}) for r in rows]
    next_rows = [r for r in next_rows if r is not gone] + [new]

    result = await load_instruments(private_db, dump(next_rows), TODAY)
    assert (result.inserted, result.updated, result.retired) == (1, 1, 1)
    assert result.unchanged == len(rows) - 2
    assert result.deactivated_tokens == [gone.instrument_token]
    sub = await private_db.fetchrow(
        "SELECT status, deactivated_reason FROM subscriptions WHERE instrument_token = $1", gone.instrument_token)
    assert dict(sub) == {"status": "inactive", "deactivated_reason": "instrument no longer listed"}
    assert await private_db.fetchval(
        "SELECT status FROM subscriptions WHERE instrument_token = $1", kept.instrument_token) == "active"
    assert await private_db.fetchval(
        "SELECT lot_size FROM instruments WHERE instrument_token = $1", changed.instrument_token) == 65
    retired = await private_db.fetchrow(
        "SELECT is_active, retired_at FROM instruments WHERE instrument_token = $1", gone.instrument_token)
    assert retired["is_active"] is False and retired["retired_at"] is not None


async def test_expiry_retires_and_expired_rows_are_not_loaded(private_db: asyncpg.Pool) -> None:
    rows = universe(TODAY)
    await load_instruments(private_db, dump(rows), TODAY)
    near = [r for r in rows if r.expiry == TODAY + timedelta(days=7)]
    await private_db.execute("INSERT INTO subscriptions (instrument_token) VALUES ($1)", near[1].instrument_token)

    later = TODAY + timedelta(days=8)  # the near expiry has passed; Kite may still list it for a day
    result = await load_instruments(private_db, dump(rows), later)
    assert result.retired == len(near)
    assert result.skipped_expired == len(near)
    assert result.deactivated_tokens == [near[1].instrument_token]
    assert await private_db.fetchval(
        "SELECT deactivated_reason FROM subscriptions WHERE instrument_token = $1",
        near[1].instrument_token) == "instrument expired"
    again = await load_instruments(private_db, dump(rows), later)
    assert not again.changed and again.unchanged == len(rows) - len(near)


async def test_a_relisted_instrument_comes_back(private_db: asyncpg.Pool) -> None:
    rows = universe(TODAY)
    await load_instruments(private_db, dump(rows), TODAY)
    await load_instruments(private_db, dump(rows[1:]), TODAY)
    assert rows[0].instrument_token not in await _active(private_db)
    result = await load_instruments(private_db, dump(rows), TODAY)
    assert (result.updated, result.retired) == (1, 0)
    back = await private_db.fetchrow("SELECT is_active, retired_at FROM instruments WHERE instrument_token = $1",
                                     rows[0].instrument_token)
    assert back["is_active"] is True and back["retired_at"] is None


async def test_an_exchange_dump_only_retires_within_its_exchange(private_db: asyncpg.Pool) -> None:
    rows = universe(TODAY)
    await load_instruments(private_db, dump(rows), TODAY)
    nse = [r for r in rows if r.exchange == "NSE"]
    result = await load_instruments(private_db, dump(nse), TODAY, exchanges=["NSE"])
    assert result.retired == 0
    assert await _active(private_db) == {r.instrument_token for r in rows}


async def test_two_runs_at_once_are_serialised(private_db: asyncpg.Pool) -> None:
    rows = universe(TODAY)
    a, b = await asyncio.gather(load_instruments(private_db, dump(rows), TODAY),
                                load_instruments(private_db, dump(rows), TODAY))
    assert sorted([a.inserted, b.inserted]) == [0, len(rows)]
    assert sorted([a.unchanged, b.unchanged]) == [0, len(rows)]
    assert await private_db.fetchval("SELECT count(*) FROM instruments") == len(rows)


@pytest.mark.parametrize(("body", "message"), [
    (b"", "empty"),
    (b"instrument_token,tradingsymbol\n1,X\n", "missing columns"),
    (dump([]), "no rows"),
])
async def test_unusable_dumps_are_refused(private_db: asyncpg.Pool, body: bytes, message: str) -> None:
    await load_instruments(private_db, dump(universe(TODAY)), TODAY)
    before = await _active(private_db)
    with pytest.raises(InstrumentError, match=message):
        await load_instruments(private_db, body, TODAY)
    assert await _active(private_db) == before


async def test_a_bad_row_rolls_everything_back_with_its_line(private_db: asyncpg.Pool) -> None:
    rows = universe(TODAY)
    await load_instruments(private_db, dump(rows), TODAY)
    lines = dump(rows[:3]).decode().splitlines()
    lines[2] = lines[2].replace("FUT", "OPTX")  # an instrument_type Kite does not have
    with pytest.raises(InstrumentError, match="line 3"):
        await load_instruments(private_db, "\n".join(lines) + "\n", TODAY)
    bad_token = dump(rows[:2]).decode().replace(str(rows[1].instrument_token), "abc", 1)
    with pytest.raises(InstrumentError, match="abc"):
        await load_instruments(private_db, bad_token, TODAY)
    assert await _active(private_db) == {r.instrument_token for r in rows}


async def test_trailing_blank_lines_and_crlf_are_fine(private_db: asyncpg.Pool) -> None:
    rows = universe(TODAY, n_strikes=2)
    body = dump(rows).replace(b"\n", b"\r\n") + b"\r\n\r\n"
    result = await load_instruments(private_db, body, TODAY)
    assert result.inserted == len(rows) == result.rows
