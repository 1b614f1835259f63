"""Fixtures for the data-job tests: a private database where whole-table effects (retiring every
instrument a dump no longer lists) cannot disturb other tests in the session, and a Redis namespace
and channel prefix per module, so jobs a test leaves queued (the scheduler's probes and slots) are
never run by a worker of another test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from pydantic import SecretStr

from tests.databases import private_database
from tests.isolation import own_namespace
from ticker.core.contracts import Names
from ticker.infra.queue.enqueue import create_queue
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import KiteAccount
from ticker.infra.stores.db import create_pool
from ticker.jobs.context import DEPS_KEY, Deps, build_deps, close_deps


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    """The session's settings with this module's own Redis namespace and channel prefix."""
    return own_namespace(settings)


@pytest.fixture(scope="module")
def names(settings: Settings) -> Names:
    return Names(settings.publish_channel_prefix, settings.redis_namespace)


@pytest_asyncio.fixture(scope="module")
async def private_db_url(database_url: str) -> AsyncIterator[str]:
    async with private_database(database_url, "ticker_data") as url:
        yield url


@pytest_asyncio.fixture(scope="module")
async def private_db(private_db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(private_db_url, min_size=1, max_size=6)
    yield pool
    await pool.close()


# --- jobs against the Kite stand-in ---------------------------------------------------------------
@dataclass
class DataEnv:
    """Worker dependencies wired to the stand-in and a private database, its accounts stored."""

    deps: Deps
    sim: Any
    account_ids: list[str]

    @property
    def ctx(self) -> dict[str, Any]:
        return {DEPS_KEY: self.deps, "job_id": f"test-{uuid.uuid4().hex[:8]}"}

    def kite_requests(self, route: str) -> int:
        return self.sim.state.counters.requests.get(route, 0)


async def make_data_env(sim: Any, settings: Settings, db_url: str, pool: asyncpg.Pool) -> DataEnv:
    await pool.execute("TRUNCATE kite_accounts")
    local = settings.model_copy(update={
        "database_url": db_url, "kite_root": sim.url, "kite_login_root": sim.url,
        "kite_api_key": None, "kite_api_secret": None, "kite_access_token": None,
        # The stand-in answers from this test's own event loop: on a busy machine serving the full
        # instrument dump can take longer than Kite's usual 7 s. These tests check what the jobs do.
        "kite_request_timeout": 120.0,
        "redis_namespace": f"{settings.redis_namespace}-{uuid.uuid4().hex[:6]}",
    })
    queue = await create_queue(local)
    d = await build_deps(local, queue)
    ids = []
    for i, acc in enumerate(sim.accounts):
        ids.append(f"sim{i + 1}")
        await d.accounts.upsert(KiteAccount(
            account_id=ids[-1], api_key=acc.api_key, auto_login=True,
            **{k: SecretStr(getattr(acc, k)) for k in ("api_secret", "access_token", "user_id",
                                                       "password", "totp_secret")}))
    return DataEnv(d, sim, ids)


@pytest_asyncio.fixture
async def data_env(kitesim: Any, settings: Settings, private_db_url: str,
                   private_db: asyncpg.Pool) -> AsyncIterator[DataEnv]:
    env = await make_data_env(kitesim, settings, private_db_url, private_db)
    yield env
    await close_deps(env.deps)
    await env.deps.redis.aclose()
