"""`GET /chain` for one 200-strike expiry (400 options) and the streamer's chain stage.

The latest-tick hash is filled with the JSON the streamer itself renders (enrich + render stages on
full-mode ticks with a five-level book), the instruments table with the chain; the read then runs
as the web process runs it: cached listing, one pipelined round trip, parse, analytics, rows.
Anchor: the bare HMGET of the same 400 fields (the floor any reader pays).
Redis and Postgres: TEST_* / plain URLs when set, else private embedded servers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from datetime import date, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from tests.bench.bench_chain import FORWARD, RATE, T
from tests.bench.harness import Report, bench_servers, best_of, fmt_time, percentile
from ticker.core import greeks as gk
from ticker.core.chain import ChainLegs
from ticker.core.contracts import Names
from ticker.core.instruments import SEG_INDICES, SEG_NFO, Instrument, make_token, option_symbol
from ticker.core.wire import Ticks
from ticker.http.chain_view import ChainReader, Sources
from ticker.infra.runtime.settings import load_settings
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.migrate import migrate
from ticker.infra.stores.redis import AutoPipeline, connect
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.batch import Chunk, Taken
from ticker.streamer.stages.chain_stream import ChainStage
from ticker.streamer.stages.enrich import Enricher
from ticker.streamer.stages.instrument_table import InstrumentTable
from ticker.streamer.stages.render import BatchRenderer

N_STRIKES, CALLS = 200, 1000
GOAL_S = 0.010
EXPIRY = date.today() + timedelta(days=9)
INDEX_TOKEN = 256265

_ = ChainLegs  # the analytics measured here are bench_chain's; this one adds the I/O around them


def instruments() -> list[Instrument]:
    strikes = np.round((FORWARD + 50.0 * np.arange(-N_STRIKES // 2, N_STRIKES // 2)) / 50.0) * 50.0
    out = [Instrument(instrument_token=INDEX_TOKEN, exchange_token=INDEX_TOKEN >> 8, tradingsymbol="NIFTY 50",
                      name="NIFTY 50", tick_size=0.0, instrument_type="EQ", segment="INDICES", exchange="NSE")]
    assert make_token(INDEX_TOKEN >> 8, SEG_INDICES) == INDEX_TOKEN
    for i, k in enumerate(strikes.tolist()):
        for j, kind in enumerate(("CE", "PE")):
            et = 700_000 + 2 * i + j
            out.append(Instrument(instrument_token=make_token(et, SEG_NFO), exchange_token=et,
                                  tradingsymbol=option_symbol("NIFTY", EXPIRY, k, kind), name="NIFTY", expiry=EXPIRY,
                                  strike=k, lot_size=65, tick_size=0.05, instrument_type=kind, segment="NFO-OPT",
                                  exchange="NFO"))
    return out


def ticks(listed: list[Instrument]) -> Ticks:
    options = listed[1:]
    strike = np.array([o.strike for o in options])
    call = np.array([o.instrument_type == "CE" for o in options])
    price = np.maximum(np.round(gk.price(FORWARD, strike, T, RATE, 0.0, 0.13, call, "black76") / 0.05) * 0.05, 0.05)
    prices = np.r_[FORWARD * 0.999, price]
    n = len(prices)
    levels = np.arange(1, 6) * 0.05
    return Ticks.build(token=np.array([i.instrument_token for i in listed]), mode="full", last_price=prices,
                       volume_traded=np.arange(n) * 65, oi=np.r_[0, np.arange(1, n) * 650],
                       exchange_timestamp=int(time.time()), last_trade_time=int(time.time()),
                       depth_buy_price=np.maximum(np.round(prices[:, None] - levels, 2), 0),
                       depth_sell_price=np.round(prices[:, None] + levels, 2),
                       depth_buy_quantity=np.full((n, 5), 75), depth_sell_quantity=np.full((n, 5), 150),
                       depth_buy_orders=np.full((n, 5), 3), depth_sell_orders=np.full((n, 5), 4))


async def run(report: Report) -> None:
    with bench_servers("chain") as (redis_base, pg_admin):
        name = f"ticker_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(pg_admin)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = urlunsplit(urlsplit(pg_admin)._replace(path=f"/{name}"))
            await migrate(url)
            await _measure(report, redis_base, url)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


async def _measure(report: Report, redis_url: str, db_url: str) -> None:
    listed = instruments()
    names = Names(f"ticker:bench{uuid.uuid4().hex[:8]}", "tbench")
    db, redis, pipe = await create_pool(db_url, min_size=1, max_size=4), connect(redis_url), AutoPipeline(redis_url)
    try:
        versions = await _seed(db, redis, names, listed)
        await _reader(report, redis, Sources(db, pipe, names), versions)
        await _http(report, redis_url, db_url, names)
    finally:
        await redis.delete(names.latest)
        await redis.aclose()
        await pipe.close()
        await db.close()
    _stage(report, listed)


async def _seed(db: asyncpg.Pool, redis, names: Names, listed: list[Instrument]) -> list[dict[bytes, bytes]]:
    """The chain in the instruments table; two renderings of its ticks (received a second apart),
    the first written to the latest-tick hash."""
    await db.executemany(
        "INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, name, last_price, expiry, strike, "
        "tick_size, lot_size, instrument_type, segment, exchange) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
        [(i.instrument_token, i.exchange_token, i.tradingsymbol, i.name, 0.0, i.expiry, i.strike, i.tick_size,
          i.lot_size, i.instrument_type, i.segment, i.exchange) for i in listed])
    table = InstrumentTable(listed)
    enricher = Enricher(table, model="black76", rate=RATE, dividend_yield=0.0, bar_interval=60,
                        metrics=StreamerMetrics())
    renderer = BatchRenderer(table, model="black76", bar_interval=60, tz=load_settings().tz)
    versions = []
    for now in (time.time() - 1.0, time.time()):
        out = renderer.render(enricher.process(Taken([Chunk(ticks(listed), now, "a")], []), now), now)
        versions.append(out.latest)
    await redis.hset(names.latest, mapping=versions[0])
    return versions


async def _reader(report: Report, redis: Redis, src: Sources, versions: list[dict[bytes, bytes]]) -> None:
    reader = ChainReader(ttl=3600.0)
    doc = await reader.snapshot(src, "NIFTY", EXPIRY)
    assert len(doc["rows"]) == N_STRIKES and doc["atm_iv"] is not None, doc["atm_iv"]
    fields = reader._listings[("NIFTY", EXPIRY)][1].fields
    floor: list[float] = []
    quiet: tuple[list[float], list[float]] = ([], [])
    busy: tuple[list[float], list[float]] = ([], [])
    for i in range(CALLS):
        t0 = time.perf_counter()
        await redis.hmget(src.names.latest, fields)
        floor.append(time.perf_counter() - t0)
        await _timed(quiet, reader.snapshot(src, "NIFTY", EXPIRY))
        await redis.hset(src.names.latest, mapping=versions[(i + 1) % 2])  # every tick new
        await _timed(busy, reader.snapshot(src, "NIFTY", EXPIRY))
    anchor = f"bare HMGET of the {2 * N_STRIKES} fields p50 {fmt_time(percentile(floor, 50))}"
    for label, (wall, cpu) in (("every tick new since the last read", busy), ("no tick new (a quiet chain)", quiet)):
        p50, p99 = percentile(wall, 50), percentile(wall, 99)
        report.row(f"chain read in the web process ({N_STRIKES} strikes, {2 * N_STRIKES} options), {label}, "
                   "p50 / p99 (and this thread's CPU per read p50 / p99)",
                   f"{fmt_time(p50)} / {fmt_time(p99)} (CPU {fmt_time(percentile(cpu, 50))} / "
                   f"{fmt_time(percentile(cpu, 99))})", anchor, percentile(floor, 50) / p50,
                   f"p99 <= {GOAL_S * 1000:.0f} ms", p99 <= GOAL_S)


async def _timed(into: tuple[list[float], list[float]], call: Awaitable[object]) -> None:
    """Wall time and this thread's CPU time of one awaited call (the CPU leaves out time the
    machine gave other processes: what the read costs a core of its own)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    await call
    into[0].append(time.perf_counter() - t0)
    into[1].append(time.thread_time() - c0)


async def _http(report: Report, redis_url: str, db_url: str, names: Names) -> None:
    from ticker.http.app import create_app

    settings = load_settings(environment="test", redis_url=redis_url, database_url=db_url,
                             redis_namespace=names.namespace, publish_channel_prefix=names.prefix,
                             http_rate_limit_per_minute=1_000_000, api_key=None, log_format="text")
    async with TestClient(TestServer(create_app(settings))) as client:
        path = f"/chain?underlying=NIFTY&expiry={EXPIRY.isoformat()}"
        first = await client.get(path)
        assert first.status == 200, await first.text()
        times = []
        began = time.perf_counter()
        for _ in range(CALLS // 2):
            t0 = time.perf_counter()
            resp = await client.get(path)
            await resp.read()
            times.append(time.perf_counter() - t0)
        rate = len(times) / (time.perf_counter() - began)
    report.row(f"GET /chain over HTTP on localhost ({N_STRIKES} strikes, no tick new), p50 / p99 and requests/s "
               "one at a time, client included",
               f"{fmt_time(percentile(times, 50))} / {fmt_time(percentile(times, 99))}, {rate:.0f} req/s")


def _stage(report: Report, listed: list[Instrument]) -> None:
    table = InstrumentTable(listed)
    enricher = Enricher(table, model="black76", rate=RATE, dividend_yield=0.0, bar_interval=60,
                        metrics=StreamerMetrics())
    stage = ChainStage(table, 0.0, model="black76")
    batch = ticks(listed)
    now = time.time()
    enriched = enricher.process(Taken([Chunk(batch, now, "a")], []), now)
    anchor = best_of(lambda: enricher.process(Taken([Chunk(batch, now, "a")], []), now), repeat=5, number=3)
    ours = best_of(lambda: stage.observe(enriched, now), repeat=5, number=3)
    report.row(f"streamer chain stage: a {2 * N_STRIKES}-option batch, every strike changed, one message",
               fmt_time(ours), f"enriching that batch {fmt_time(anchor)}", anchor / ours)
