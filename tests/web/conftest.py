"""The web app in-process on real Redis and Postgres, every response held to the OpenAPI spec.

The web tests get their own database, key namespace and channel prefix (same servers as the rest of
the session): they assert on whole tables (the audit, accounts) and must not see other parts' rows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import SESSION_ID
from tests.databases import create_database, drop_database
from tests.web.seed import seed_instruments
from tests.web.spec_check import SpecChecker
from ticker.core.contracts import Names
from ticker.http.app import create_app
from ticker.http.middleware.edge import ApiRunner
from ticker.http.routes.openapi_api import spec
from ticker.infra.queue.enqueue import names_for
from ticker.infra.runtime.settings import Settings, load_settings
from ticker.infra.stores.crypto import new_key
from ticker.infra.stores.db import create_pool

API_KEY = "trading-key-0123456789abcdefghijklmnop"
ADMIN_KEY = "admin-key-0123456789ABCDEFGHIJKLMNOPQR"
KITE = {"kite_api_key": "webtestkey", "kite_api_secret": "webtestsecret", "kite_account_id": "primary"}


def web_settings(base: Settings, **overrides: Any) -> Settings:
    """The session's settings with a Kite account, a generous rate limit, and any overrides."""
    return load_settings(**{**base.model_dump(), **KITE, "http_rate_limit_per_minute": 100_000, **overrides})


@contextlib.contextmanager
def fresh_database(admin_url: str, name: str) -> Iterator[str]:
    """A new, migrated database, dropped afterwards."""

    url = _run(create_database(admin_url, name))
    try:
        yield url
    finally:
        _run(drop_database(admin_url, name))


def _run(coro: Awaitable[Any]) -> Any:
    """Run setup/teardown work outside the test loop (a fresh thread when a loop is running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class ApiTestServer(TestServer):
    """The app on a real port, served as `ticker web` serves it (`ApiRunner`)."""

    async def _make_runner(self, **kwargs: Any) -> ApiRunner:
        return ApiRunner(self.app, **kwargs)


@pytest.fixture(scope="session")
def web_database_url(_server_urls: tuple[str, str]) -> Iterator[str]:
    with fresh_database(_server_urls[1], f"ticker_web_{SESSION_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def settings(redis_url: str, web_database_url: str) -> Settings:
    return load_settings(environment="test", redis_url=redis_url, database_url=web_database_url,
                         redis_namespace=f"tw{SESSION_ID}", publish_channel_prefix=f"ticker:w{SESSION_ID}",
                         log_format="text", api_key=None, account_encryption_key=new_key())


@pytest.fixture(scope="session")
def names(settings: Settings) -> Names:
    return names_for(settings)


@pytest_asyncio.fixture(scope="session")
async def db(web_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(web_database_url, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def spec_checker() -> SpecChecker:
    return SpecChecker(spec())


@pytest_asyncio.fixture(scope="session")
async def seeded(db) -> None:
    await seed_instruments(db)


@pytest_asyncio.fixture
async def make_api(settings: Settings, spec_checker: SpecChecker, seeded: None
                   ) -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    """`await make_api(headers=None, **settings_overrides)`: a started app and a client for it
    (sending `headers` with every request); every response it gives during the test must match
    the spec."""
    spec_checker.take_failures()
    async with contextlib.AsyncExitStack() as stack:
        async def start(headers: dict[str, str] | None = None, **overrides: Any) -> TestClient:
            app = create_app(web_settings(settings, **overrides))
            app.middlewares.insert(0, spec_checker.middleware())
            client = TestClient(ApiTestServer(app), headers=headers)
            await client.start_server()
            stack.push_async_callback(client.close)
            return client

        yield start
    failures = spec_checker.take_failures()
    assert not failures, "responses that break openapi.yaml:\n" + "\n".join(failures)


@pytest_asyncio.fixture
async def api(make_api) -> TestClient:
    return await make_api()


@pytest_asyncio.fixture
async def admin_api(make_api) -> TestClient:
    """An app with both keys, and a client that sends the admin key."""
    return await make_api(headers={"X-API-Key": ADMIN_KEY}, api_key=API_KEY, admin_api_key=ADMIN_KEY)
