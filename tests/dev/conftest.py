"""Each module here has its own Redis namespace and channel prefix, and its own database: the
rebalancer test rewrites whole tables and the latest-tick hash, which no other test may see."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from tests.databases import private_database
from tests.dev.shared_dev import RunningDev, running_dev
from tests.isolation import own_namespace
from ticker.core.contracts import Names
from ticker.infra.queue.enqueue import names_for
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.db import create_pool


@pytest_asyncio.fixture(scope="module")
async def _module_database(database_url: str) -> AsyncIterator[str]:
    async with private_database(database_url, "ticker_dev") as url:
        yield url


@pytest.fixture(scope="module")
def settings(settings: Settings, _module_database: str) -> Settings:
    return own_namespace(settings, database_url=_module_database)


@pytest.fixture(scope="module")
def names(settings: Settings) -> Names:
    return names_for(settings)


@pytest_asyncio.fixture(scope="module")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings.database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def ticker_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDev]:
    """A running `ticker dev` shared by every test that asks for it (started once, on first use)."""
    with running_dev(tmp_path_factory.mktemp("dev-home")) as dev:
        yield dev
