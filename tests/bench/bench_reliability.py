"""Reliability of the streamer under bad input and a Redis outage (`python -m tests.bench reliability`).

Set-up, all in this process's event loop except Redis: the stand-in with one account (so each
injected frame reaches exactly one socket), a streamer with the production defaults, a private
redis-server it publishes to (killed with SIGKILL and restarted on its port), a scratch database
(TEST_DATABASE_URL / DATABASE_URL, else embedded) holding the stand-in's instruments and 40
NIFTY option subscriptions in full mode, and a subscriber on that Redis.

Rows:
- ticks lost to 50 bad frames: good ticks the stand-in sent while 50 bad frames were injected
  through `POST /_sim/ws/inject` (and good packets inside those frames) that never reached Redis.
  Goal: none; only the bad packets are lost, each counted as malformed.
- time from Redis back to the streamer publishing again, over several outages each long enough
  for the retry back-off to reach its cap (REDIS_BREAKER_RESET_SECONDS). Goal: <= 2 s.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

from tests.bench.harness import Report, bench_servers
from tests.databases import private_database
from tests.streamer.conftest import Recorder, running_streamer
from tests.streamer.redis_server import RedisServer
from tests.streamer.reliability import doc_key, lost_to_bad_frames, publishing_again_after, summary

OPTIONS = 40
BAD_FRAMES = 50
OUTAGES = 5
RETRIES_BEFORE_RESTART = 6  # failed publish probes per outage: the back-off reaches its cap
GOAL_COMEBACK = 2.0


async def _load(db_url: str, sim, settings) -> tuple[list[int], int]:
    from ticker.infra.stores.accounts import KiteAccount, account_store
    from ticker.infra.stores.db import create_pool
    from ticker.jobs.data.instrument_refresh import load_instruments

    pool = await create_pool(db_url)
    try:
        await load_instruments(pool, sim.state.instruments_csv(None).encode(), datetime.now(settings.tz).date())
        store = account_store(pool, settings)
        acc = sim.accounts[0]
        await store.upsert(KiteAccount(account_id="bench1", api_key=acc.api_key, api_secret=acc.api_secret,
                                       access_token=acc.access_token, token_state="valid"))
        spot = await pool.fetchval("SELECT last_price FROM instruments WHERE tradingsymbol = 'NIFTY 50'")
        rows = await pool.fetch(
            """SELECT instrument_token FROM instruments WHERE name = 'NIFTY' AND instrument_type IN ('CE', 'PE')
               AND is_active ORDER BY expiry, abs(strike - $1), strike, instrument_type LIMIT $2""", spot, OPTIONS)
        tokens = [r[0] for r in rows]
        await pool.executemany("INSERT INTO subscriptions (instrument_token, requested_mode) VALUES ($1, 'FULL')",
                               [(t,) for t in tokens])
        index = await pool.fetchval("SELECT instrument_token FROM instruments WHERE tradingsymbol = 'NIFTY 50'")
        return tokens, index
    finally:
        await pool.close()


async def _until(check, bound: float = 60.0) -> None:
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("the rig did not get there in time")
        await asyncio.sleep(0.02)


async def _measure(report: Report) -> None:
    from ticker.infra.kitesim.config import SimConfig
    from ticker.infra.kitesim.server import running_sim
    from ticker.infra.runtime.settings import load_settings
    from ticker.infra.stores.crypto import new_key
    from ticker.infra.stores.redis import connect

    folder = Path(tempfile.mkdtemp(prefix="ticker-bench-reliability-"))
    server = RedisServer(folder / "redis")
    redis_url = server.start()
    tag = uuid.uuid4().hex[:8]
    try:
        with bench_servers("reliability") as (_, pg_admin):
            async with private_database(pg_admin, "ticker_bench_rel") as db_url, \
                    running_sim(SimConfig(accounts=1, seed=7, tick_interval_ms=50)) as sim:
                settings = load_settings(
                    environment="test", redis_url=redis_url, database_url=db_url, redis_namespace=f"rel{tag}",
                    publish_channel_prefix=f"ticker:rel{tag}", kite_root=sim.url, kite_ws_root=sim.ws_url,
                    kite_api_key=None, log_format="text", api_key=None, account_encryption_key=new_key())
                tokens, index = await _load(db_url, sim, settings)
                names = (settings.publish_channel_prefix + ":options", settings.publish_channel_prefix + ":underlying")
                client = connect(redis_url)
                try:
                    async with Recorder(client, list(names)) as rec, running_streamer(settings) as streamer:
                        await _until(lambda: rec.tokens(names[0]) >= set(tokens))

                        def published() -> Counter:
                            return Counter(doc_key(t) for ch in names for t in rec.ticks(ch) if t.get("type") != "bar")

                        loss = await lost_to_bad_frames(sim, streamer, published, tokens, index, BAD_FRAMES)
                        comebacks = []
                        for _ in range(OUTAGES):
                            failures = streamer.link.failures["publisher"]
                            server.kill()
                            await _until(lambda f=failures: streamer.link.failures["publisher"]
                                         >= f + RETRIES_BEFORE_RESTART)
                            comebacks.append(await publishing_again_after(server.start, streamer))
                            await _until(lambda: streamer.health()[1]["status"] == "streaming")
                finally:
                    await client.aclose()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)

    report.row(f"streamer: ticks lost to {BAD_FRAMES} bad frames (injected while good ticks flow)",
               loss.describe(), goal="0 good ticks; only the bad packets, each counted as malformed",
               met=loss.lost_good == 0 and loss.malformed == loss.bad_packets)
    report.row("streamer: time from Redis back (SIGKILL, restarted on its port) to publishing again",
               summary(comebacks) + f" (REDIS_BREAKER_RESET_SECONDS={settings.redis_breaker_reset_seconds})",
               goal=f"<= {GOAL_COMEBACK:.0f} s", met=max(comebacks) <= GOAL_COMEBACK)


def run(report: Report):
    return _measure(report)
