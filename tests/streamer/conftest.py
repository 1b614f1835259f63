"""Fixtures for the streamer's end-to-end tests: the Kite stand-in, a private database loaded with
its instruments and accounts, Redis names of our own, and a Redis subscriber that records ticks.

Every test gets its own channel prefix and key namespace (other parts' tests share the session's
Redis) and the module its own database (their tests change subscriptions too).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.databases import private_database
from ticker.core.contracts import Names
from ticker.core.tick_envelope import CHAINS, UPDATES, unwrap
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import KiteAccount, account_store
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.redis import connect
from ticker.jobs.data.instrument_refresh import load_instruments
from ticker.streamer.process.wiring import Clients, Streamer


@pytest_asyncio.fixture(scope="module")
async def streamer_db_url(database_url: str) -> AsyncIterator[str]:
    async with private_database(database_url, "ticker_streamer") as url:
        yield url


@pytest_asyncio.fixture(scope="module")
async def sdb(streamer_db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(streamer_db_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def ssettings(settings: Settings, streamer_db_url: str, kitesim: Any) -> Settings:
    """Settings for one streamer test: our database, our Redis names, the stand-in as Kite."""
    tag = uuid.uuid4().hex[:8]
    return settings.model_copy(update={
        "database_url": streamer_db_url, "redis_namespace": f"st{tag}", "publish_channel_prefix": f"ticker:s{tag}",
        "kite_root": kitesim.url, "kite_ws_root": kitesim.ws_url, "kite_api_key": None,
        "tick_batch_window_ms": 100, "stall_seconds": 1.5, "streamer_lease_ms": 2000,
        "redis_breaker_reset_seconds": 0.5, "streamer_reconcile_seconds": 30.0,
    })


@pytest.fixture
def snames(ssettings: Settings) -> Names:
    return Names(ssettings.publish_channel_prefix, ssettings.redis_namespace)


@pytest_asyncio.fixture
async def market(kitesim: Any, sdb: asyncpg.Pool, ssettings: Settings) -> Any:
    """The stand-in's instruments and accounts in our database; no subscriptions yet."""
    today = datetime.now(ssettings.tz).date()
    await load_instruments(sdb, kitesim.state.instruments_csv(None).encode(), today)
    await sdb.execute("DELETE FROM subscriptions")
    await sdb.execute("DELETE FROM kite_accounts")
    store = account_store(sdb, ssettings)
    for i, acc in enumerate(kitesim.accounts):
        await store.upsert(KiteAccount(account_id=f"acc{i + 1}", api_key=acc.api_key, api_secret=acc.api_secret,
                                       access_token=acc.access_token, token_state="valid"))
    return kitesim


async def option_tokens(db: asyncpg.Pool, count: int, name: str = "NIFTY") -> list[int]:
    """`count` options of the nearest expiries, strikes nearest the money first (calls and puts)."""
    spot = await db.fetchval("SELECT last_price FROM instruments WHERE tradingsymbol = 'NIFTY 50'")
    rows = await db.fetch(
        """SELECT instrument_token FROM instruments
           WHERE name = $1 AND instrument_type IN ('CE', 'PE') AND is_active
           ORDER BY expiry, abs(strike - $2), strike, instrument_type LIMIT $3""", name, spot or 0.0, count)
    return [r[0] for r in rows]


async def subscribe(db: asyncpg.Pool, tokens: list[int], mode: str = "FULL") -> None:
    await db.executemany(
        """INSERT INTO subscriptions (instrument_token, requested_mode, status) VALUES ($1, $2, 'active')
           ON CONFLICT (instrument_token) DO UPDATE SET status = 'active', requested_mode = $2""",
        [(t, mode) for t in tokens])


class Recorder:
    """A Redis subscriber that keeps every message it receives (tests only; bounded by the test)."""

    def __init__(self, redis: Redis, channels: list[str]) -> None:
        self.redis = redis
        self.channels = channels
        self.messages: list[tuple[float, str, Any]] = []
        self.envelopes: list[tuple[float, str, dict]] = []  # (time, channel, envelope) as published
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self.reconnects = 0

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), BOUND)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self.channels)
                self._ready.set()
                while True:
                    msg = await pubsub.get_message(timeout=0.5)
                    if msg and msg["type"] == "message":
                        self._record(msg["channel"].decode(), orjson.loads(msg["data"]))
            except (RedisError, OSError):  # the outage test stops Redis under us: resubscribe
                self.reconnects += 1
                await asyncio.sleep(0.1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _record(self, channel: str, doc: Any) -> None:
        """A tick message is kept as its array of ticks; order updates and chains one by one, as
        each was its own message before envelopes. The envelopes themselves go to `envelopes`."""
        at = time.time()
        items, _ = unwrap(doc)
        if isinstance(doc, dict) and "seq" in doc:
            self.envelopes.append((at, channel, doc))
        if isinstance(doc, dict) and (UPDATES in doc or CHAINS in doc):
            self.messages.extend((at, channel, item) for item in items)
        else:
            self.messages.append((at, channel, items if isinstance(doc, dict) and "seq" in doc else doc))

    def ticks(self, channel: str, since: float = 0.0) -> list[dict]:
        return [t for at, ch, doc in self.messages if ch == channel and at >= since for t in doc
                if isinstance(doc, list)]

    def tokens(self, channel: str, since: float = 0.0) -> set[int]:
        return {t["instrument_token"] for t in self.ticks(channel, since) if t.get("type") != "bar"}


BOUND = 60.0  # how long a condition may take to hold: generous, since a busy machine is slow, not wrong


async def wait_for(predicate: Callable[[], bool], timeout: float = BOUND, step: float = 0.05) -> float:
    """Poll until `predicate()` holds; returns the seconds it took (for a printout, never an
    assertion), fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def running_streamer(settings: Settings, instance: str = "test") -> AsyncIterator[Streamer]:
    clients = await Clients.open(settings)
    streamer = Streamer(settings, clients, instance)
    await streamer.start()
    try:
        yield streamer
    finally:
        await streamer.stop()


@pytest_asyncio.fixture
async def sredis(ssettings: Settings) -> AsyncIterator[Redis]:
    client = connect(ssettings.redis_url)
    yield client
    await client.aclose()
