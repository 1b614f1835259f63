"""An order world for job tests: the Kite stand-in, its instruments in Postgres, its accounts stored
(encrypted) in `kite_accounts`, settings pointing at it, the web app taking orders in on those
settings (`world.api`, as production takes them), and helpers to run workers.

Isolation: each test module gets its own database, Redis key namespace and channel prefix (the
`settings`, `names` and `db` fixtures below override the session's), and each world gets its own
namespace and prefix within that. So no worker, queue, rate limit, breaker or postback consumer of
one test can see another test's jobs or rows, and jobs another test left queued never run here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from tests.databases import private_database
from tests.isolation import own_namespace
from tests.order_api import OrderApi, web_orders
from tests.waiting import wait_for
from ticker.core.contracts import Names
from ticker.core.instruments import Instrument, parse_csv
from ticker.infra.kite.rest import KiteApi, KiteHttp
from ticker.infra.queue.enqueue import create_queue, names_for
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import KiteAccount, account_store
from ticker.infra.stores.db import create_pool
from ticker.jobs.worker import run

__all__ = ["FAST", "HOLD_MS", "World", "run_burst", "wait_for"]

# Fast retries so fault tests finish in seconds; the policy itself is unchanged. A call to the
# stand-in times out after 3 s: far above what an answered call takes even on a busy machine, so only
# an injected fault makes one time out (faults that withhold an answer hold it for HOLD_MS).
FAST = {"order_retry_base_seconds": 0.02, "order_retry_max_seconds": 0.2, "order_request_timeout": 3.0,
        "breaker_failure_threshold": 1000, "worker_shutdown_grace_seconds": 2.0}
HOLD_MS = 600_000  # the stand-in cancels whatever it still holds when it stops
_loaded_instruments: list[Instrument] = []
_world_numbers = itertools.count(1)


@pytest_asyncio.fixture(scope="module")
async def _module_database(database_url: str) -> AsyncIterator[str]:
    async with private_database(database_url, "ticker_jobs") as url:
        yield url


@pytest.fixture(scope="module")
def settings(settings: Settings, _module_database: str) -> Settings:
    """The session's settings with this module's own database, Redis namespace and channel prefix."""
    return own_namespace(settings, database_url=_module_database)


@pytest.fixture(scope="module")
def names(settings: Settings) -> Names:
    return names_for(settings)


@pytest_asyncio.fixture(scope="module")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings.database_url, min_size=1, max_size=10)
    yield pool
    await pool.close()


@dataclass
class World:
    sim: Any
    settings: Settings
    accounts: list[str]  # our account ids, one per stand-in account, same order
    option: Instrument  # an NFO option with a lot size > 1
    arq: Any
    api: OrderApi  # the web app on this world's settings: orders go in as production takes them
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def names(self) -> Names:
        """This world's queues, keys and channels (no other world or test shares them)."""
        return names_for(self.settings)

    @property
    def counters(self) -> dict[str, Any]:
        return self.sim.state.counters.snapshot()

    def api_key(self, account_id: str) -> str:
        return self.sim.accounts[self.accounts.index(account_id)].api_key

    def orders_with_tag(self, tag: str) -> int:
        return self.sim.state.counters.orders_by_tag.get(tag, 0)

    async def admin(self, method: str, path: str, body: dict | None = None) -> Any:
        async with aiohttp.ClientSession() as s, s.request(method, self.sim.url + path, json=body) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    def env(self, **extra: Any) -> dict[str, str]:
        """Environment for a `ticker worker` subprocess with these settings."""
        s = self.settings
        values = {
            "REDIS_URL": s.redis_url, "DATABASE_URL": s.database_url, "REDIS_NAMESPACE": s.redis_namespace,
            "PUBLISH_CHANNEL_PREFIX": s.publish_channel_prefix, "KITE_ROOT": s.kite_root, "ENVIRONMENT": "test",
            "ACCOUNT_ENCRYPTION_KEY": s.account_encryption_key.get_secret_value(), "LOG_FORMAT": "text",
            "LOG_LEVEL": "WARNING",
            **{k.upper(): v for k, v in FAST.items()}, **{k.upper(): v for k, v in extra.items()},
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KITE_", "REDIS_", "DATABASE_"))}
        env.update({k: str(v) for k, v in values.items()})
        return env

    def start_worker(self, *args: str, **extra: Any) -> subprocess.Popen:
        """A real `ticker worker` process; its log goes to a temporary file (`log_of`)."""
        log = tempfile.NamedTemporaryFile(prefix="ticker-worker-", suffix=".log", delete=False)  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "ticker.infra.cli.main", "worker", *args], env=self.env(**extra),
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def log_of(proc: subprocess.Popen, tail: int | None = 4000) -> str:
        """The end of the worker's log (all of it with tail=None)."""
        with open(proc.log_path) as fh:  # type: ignore[attr-defined]
            text = fh.read()
        return text if tail is None else text[-tail:]


async def _instruments(sim: Any) -> list[Instrument]:
    if not _loaded_instruments:
        http = KiteHttp(sim.url)
        try:
            account = sim.accounts[0]
            raw = await KiteApi(http, account.api_key, account.access_token).instruments()
        finally:
            await http.close()
        _loaded_instruments.extend(parse_csv(raw))
    return _loaded_instruments


async def _load_instruments(db: Any, instruments: list[Instrument]) -> None:
    rows = [(i.instrument_token, i.exchange_token, i.tradingsymbol, i.name, i.last_price, i.expiry, i.strike,
             i.tick_size, i.lot_size, i.instrument_type, i.segment, i.exchange) for i in instruments]
    await db.executemany(
        "INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, name, last_price, expiry,"
        " strike, tick_size, lot_size, instrument_type, segment, exchange)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (instrument_token) DO NOTHING",
        rows,
    )


def _pick(instruments: list[Instrument]) -> Instrument:
    return next(i for i in instruments if i.exchange == "NFO" and i.is_option and i.lot_size > 1)


@pytest_asyncio.fixture
async def world_factory(kitesim_factory, db, settings) -> AsyncIterator[Callable[..., Awaitable[World]]]:
    worlds: list[World] = []
    webs = contextlib.AsyncExitStack()

    async def make(accounts: int = 2, *, overrides: dict[str, Any] | None = None, **sim_config: Any) -> World:
        sim = await kitesim_factory(accounts=accounts, **sim_config)
        instruments = await _instruments(sim)
        await _load_instruments(db, instruments)
        local = own_namespace(settings, f"w{next(_world_numbers)}", **{"kite_root": sim.url, **FAST,
                                                                      **(overrides or {})})
        store = account_store(db, local)
        ids = []
        for i, acct in enumerate(sim.accounts):
            account_id = f"sim{i + 1}"
            await store.upsert(KiteAccount(account_id=account_id, api_key=acct.api_key,
                                           access_token=acct.access_token, token_state="valid"))
            ids.append(account_id)
        api = await webs.enter_async_context(web_orders(local))
        world = World(sim, local, ids, _pick(instruments), await create_queue(local), api)
        worlds.append(world)
        return world

    yield make
    await webs.aclose()
    for w in worlds:
        for proc in w.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            os.unlink(proc.log_path)
        await w.arq.aclose()


@pytest_asyncio.fixture
async def world(world_factory) -> World:
    return await world_factory()


async def run_burst(world: World, queues: tuple[str, ...] = ("orders",)) -> int:
    """Run in-process workers on the world's queues until they are empty (deferred retries included)."""
    return await asyncio.wait_for(run(world.settings, queues, burst=True), 120)
