"""Instrument refresh of a 100k-row dump, end to end from the CSV bytes to a committed table.

Ours: `load_instruments` (COPY into a staging table, one set-based upsert, retire, deactivate).
Anchor: the straightforward way, measured in the same run on the same dump — parse the CSV into
models (`core.instruments.parse_csv`) and INSERT ... ON CONFLICT row by row with asyncpg's
`executemany`, into an equally empty table.
Postgres: TEST_DATABASE_URL / DATABASE_URL when set, else an embedded server; a scratch database
is created and dropped.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.bench.harness import Report, fmt_time
from ticker.core.instruments import SEG_NFO, Instrument, format_csv, make_token, option_symbol, parse_csv
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.migrate import migrate
from ticker.jobs.data.instrument_refresh import load_instruments

ROWS = 100_000
GOAL_S = 3.0
TODAY = date(2030, 1, 1)


def synthetic_dump(n: int) -> bytes:
    """n NFO options across 20 expiries and 2,500 strikes (real-sized symbols and tokens)."""
    rows = []
    for i in range(n):
        expiry = TODAY + timedelta(days=7 * (1 + i % 20))
        strike = 10_000 + 50 * ((i // 40) % 2500)
        kind = "CE" if i % 2 else "PE"
        et = 100_000 + i
        rows.append(Instrument(
            instrument_token=make_token(et, SEG_NFO), exchange_token=et,
            tradingsymbol=option_symbol(f"U{(i // 100_000) % 10}X{(i // 2) % 20}", expiry, strike, kind),
            name="NIFTY", last_price=0.0, expiry=expiry, strike=strike, tick_size=0.05, lot_size=75,
            instrument_type=kind, segment="NFO-OPT", exchange="NFO"))
    return format_csv(rows).encode()


_ANCHOR_SQL = """
INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, name, last_price, expiry, strike,
    tick_size, lot_size, instrument_type, segment, exchange)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (instrument_token) DO UPDATE SET exchange_token = EXCLUDED.exchange_token,
    tradingsymbol = EXCLUDED.tradingsymbol, name = EXCLUDED.name, last_price = EXCLUDED.last_price,
    expiry = EXCLUDED.expiry, strike = EXCLUDED.strike, tick_size = EXCLUDED.tick_size,
    lot_size = EXCLUDED.lot_size, instrument_type = EXCLUDED.instrument_type, segment = EXCLUDED.segment,
    exchange = EXCLUDED.exchange, is_active = TRUE, retired_at = NULL, updated_at = now()
"""


async def anchor_load(pool: asyncpg.Pool, body: bytes) -> None:
    records = [(i.instrument_token, i.exchange_token, i.tradingsymbol, i.name, i.last_price, i.expiry, i.strike,
                i.tick_size, i.lot_size, i.instrument_type, i.segment, i.exchange) for i in parse_csv(body)]
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(_ANCHOR_SQL, records)


async def _timed(coro_factory) -> float:
    t0 = time.perf_counter()
    await coro_factory()
    return time.perf_counter() - t0


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def run(report: Report) -> None:
    server = None
    admin_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not admin_url:
        from ticker.infra.dev.embedded import EmbeddedPostgres

        server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="ticker-bench-")) / "pg")
        admin_url = server.start()
    name = f"ticker_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = _with_db(admin_url, name)
        await migrate(url)
        pool = await create_pool(url, min_size=1, max_size=4)
        try:
            await _measure(report, pool)
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if server is not None:
            server.stop()


async def _measure(report: Report, pool: asyncpg.Pool) -> None:
    body = synthetic_dump(ROWS)
    firsts = []
    for _ in range(3):
        await pool.execute("TRUNCATE instruments")
        firsts.append(await _timed(lambda: load_instruments(pool, body, TODAY)))
    ours = min(firsts)
    again = min([await _timed(lambda: load_instruments(pool, body, TODAY)) for _ in range(3)])
    lines = body.split(b"\n")
    moved = b"\n".join(lines[:1] + lines[1 + ROWS // 50:]) + b"\n"  # 2% delisted
    daily = await _timed(lambda: load_instruments(pool, moved, TODAY))

    await pool.execute("TRUNCATE instruments")
    anchor = await _timed(lambda: anchor_load(pool, body))
    report.row(f"instrument refresh, {ROWS // 1000}k-row dump into an empty table", fmt_time(ours),
               anchor=f"parse_csv + executemany INSERT: {fmt_time(anchor)}", ratio=anchor / ours,
               goal=f"<= {GOAL_S:.0f} s", met=ours <= GOAL_S)
    report.row(f"instrument refresh, same {ROWS // 1000}k dump again (nothing changes)", fmt_time(again))
    report.row(f"instrument refresh, {ROWS // 1000}k dump with 2% delisted (retire)", fmt_time(daily))
    await _over_http(report, pool)


async def _over_http(report: Report, pool: asyncpg.Pool) -> None:
    """Download from the Kite stand-in's `full` profile over HTTP, then load: the job's whole path."""
    from ticker.infra.kite.rest import KiteApi, KiteHttp
    from ticker.infra.kitesim.config import SimConfig
    from ticker.infra.kitesim.server import running_sim

    async with running_sim(SimConfig(profile="full")) as sim:
        http = KiteHttp(sim.url, timeout=60)
        api = KiteApi(http, sim.account.api_key, sim.account.access_token)
        try:
            await api.instruments()  # the stand-in renders its dump once; time the steady state
            await pool.execute("TRUNCATE instruments")
            t0 = time.perf_counter()
            body = await api.instruments()
            result = await load_instruments(pool, body, date.today())
            took = time.perf_counter() - t0
        finally:
            await http.close()
    report.row(f"instrument refresh over HTTP from the stand-in, {result.rows // 1000}k rows "
               f"({len(body) / 1e6:.1f} MB), download + load", fmt_time(took),
               goal=f"<= {GOAL_S:.0f} s", met=took <= GOAL_S)
