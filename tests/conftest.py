"""Real servers for the test session.

Redis and PostgreSQL are the ones named by TEST_REDIS_URL / TEST_DATABASE_URL when set, otherwise
embedded ones started here. Each session gets its own freshly created database and its own Redis
db index, key namespace and channel prefix, so concurrent runs never see each other's data.

The db index matters beyond the namespace: arq keeps job records under the bare job id, and some ids
are derived from the request (a schedule slot, a history query). An index is claimed in db 0 for
the session and released at its end, so a run never flushes or shares one another run is using.
Property tests run the same examples every time and have no per-example deadline: a busy machine
must not turn them red.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from redis.asyncio import Redis

from tests.databases import create_database, drop_database
from ticker.core.contracts import Names
from ticker.infra.dev.embedded import servers
from ticker.infra.runtime.settings import Settings, load_settings
from ticker.infra.stores.crypto import new_key
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.redis import connect

pytest_plugins = ["tests.sim_fixtures", "tests.proxy_fixtures", "tests.redis_cluster"]

SESSION_ID = uuid.uuid4().hex[:10]
REDIS_DB_INDEXES = range(1, 16)  # db 0 holds the claims
CLAIM_SECONDS = 6 * 3600  # longer than any run: a run killed mid-way frees its index after this long

hypothesis_settings.register_profile("ticker", deadline=None, derandomize=True, database=None,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("ticker")


@pytest.fixture(scope="session")
def _server_urls() -> Iterator[tuple[str, str]]:
    """(redis base url, postgres admin url) of real servers, embedded when not given."""
    folder = Path(tempfile.mkdtemp(prefix="ticker-test-"))
    try:
        with servers(folder, os.environ.get("TEST_REDIS_URL"), os.environ.get("TEST_DATABASE_URL")) as urls:
            yield urls
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _with_db_index(url: str, index: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{index}"))


@pytest.fixture(scope="session")
def database_url(_server_urls: tuple[str, str]) -> Iterator[str]:
    """A fresh, migrated database for this session, dropped at the end."""
    admin_url = _server_urls[1]
    name = f"ticker_test_{SESSION_ID}"
    url = asyncio.run(create_database(admin_url, name))
    yield url
    asyncio.run(drop_database(admin_url, name))


def _claim_key(index: int) -> str:
    return f"ticker-test:db-claim:{index}"


async def _claim_db_index(base: str) -> tuple[int, bool]:
    """(index, claimed): a free index claimed for this session and flushed, starting the search at a
    rotating position; when all are taken (many runs at once), a shared one, not flushed."""
    client = connect(_with_db_index(base, 0))
    try:
        start = await client.incr("ticker-test:db-counter")
        count = len(REDIS_DB_INDEXES)
        for k in range(count):
            index = REDIS_DB_INDEXES[(start + k) % count]
            if await client.set(_claim_key(index), SESSION_ID, nx=True, ex=CLAIM_SECONDS):
                scoped = connect(_with_db_index(base, index))
                await scoped.flushdb()
                await scoped.aclose()
                return index, True
        return REDIS_DB_INDEXES[start % count], False
    finally:
        await client.aclose()


async def _release_db_index(base: str, index: int) -> None:
    client = connect(_with_db_index(base, 0))
    try:
        await client.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"
                          " return 0", 1, _claim_key(index), SESSION_ID)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_url(_server_urls: tuple[str, str]) -> Iterator[str]:
    """A Redis db index (1–15) of this session's own, flushed before use."""
    base = _server_urls[0]
    index, claimed = asyncio.run(_claim_db_index(base))
    yield _with_db_index(base, index)
    if claimed:
        asyncio.run(_release_db_index(base, index))


@pytest.fixture(scope="session")
def settings(redis_url: str, database_url: str) -> Settings:
    return load_settings(
        environment="test",
        redis_url=redis_url,
        database_url=database_url,
        redis_namespace=f"tt{SESSION_ID}",
        publish_channel_prefix=f"ticker:t{SESSION_ID}",
        log_format="text",
        api_key=None,
        account_encryption_key=new_key(),
    )


@pytest.fixture(scope="session")
def names(settings: Settings) -> Names:
    return Names(settings.publish_channel_prefix, settings.redis_namespace)


@pytest_asyncio.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = connect(settings.redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=10)
    yield pool
    await pool.close()
