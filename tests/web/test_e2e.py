"""End to end through HTTP only: real `ticker web` and `ticker worker` processes, real Redis and
Postgres, Kite played by the stand-in. These tests get their own database and queue names, so the
worker never touches the jobs other web tests leave queued."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import SESSION_ID
from tests.web.conftest import fresh_database
from tests.web.procs import process_env, streamer_process, web_process, worker_process
from tests.web.spec_check import SpecChecker
from ticker.infra.kite.rest import KiteApi, KiteHttp
from ticker.infra.kitesim.universe import today_ist
from ticker.infra.runtime.settings import load_settings
from ticker.infra.stores.crypto import new_key
from ticker.infra.stores.db import create_pool
from ticker.jobs.data.instrument_refresh import load_instruments


@dataclass
class Stack:
    url: str
    sim: Any
    option: dict[str, Any]
    http: aiohttp.ClientSession
    checker: SpecChecker
    chain: list[dict[str, Any]]
    settings: Any = None  # the processes' settings (names, prefix)
    streamer_url: str | None = None

    async def call(self, method: str, path: str, template: str, **kw: Any) -> tuple[int, dict]:
        async with self.http.request(method, self.url + path, **kw) as resp:
            body = await resp.read()
            self.checker.check(method, template, resp.status, resp.content_type, body)
            return resp.status, await resp.json()


@pytest.fixture
def e2e_database(_server_urls):
    with fresh_database(_server_urls[1], f"ticker_e2e_{SESSION_ID}") as url:
        yield url


@contextlib.asynccontextmanager
async def running_stack(database: str, redis_url: str, sim: Any, checker: SpecChecker, *,
                        streamer: bool = False, **extra_env: str) -> AsyncIterator[Stack]:
    """Web and worker (and, when asked, the streamer) against the stand-in, instruments loaded;
    `extra_env` adds to (or overrides) the processes' environment."""
    account = sim.account
    settings = load_settings(environment="test", redis_url=redis_url, database_url=database,
                             redis_namespace=f"te{uuid.uuid4().hex[:8]}",
                             publish_channel_prefix=f"ticker:e{uuid.uuid4().hex[:8]}",
                             account_encryption_key=new_key())
    kite_http = KiteHttp(sim.url)
    pool = await create_pool(database)
    try:
        dump = await KiteApi(kite_http, account.api_key, account.access_token).instruments()
        await load_instruments(pool, dump, today_ist())
        # an at-the-money call a few weeks out: deep in-the-money prices have no implied volatility
        calls = await pool.fetch("SELECT tradingsymbol, lot_size, instrument_token, expiry FROM instruments "
                                 "WHERE name = 'NIFTY' AND instrument_type = 'CE' AND is_active "
                                 "ORDER BY expiry, strike")
        expiries = sorted({c["expiry"] for c in calls})
        chain = [dict(c) for c in calls if c["expiry"] == expiries[min(1, len(expiries) - 1)]]
    finally:
        await pool.close()
        await kite_http.close()
    env = process_env(settings, KITE_ROOT=sim.url, KITE_WS_ROOT=sim.ws_url, KITE_API_KEY=account.api_key,
                      KITE_API_SECRET=account.api_secret, KITE_ACCESS_TOKEN=account.access_token,
                      KITE_ACCOUNT_ID="primary", ORDER_RETRY_BASE_SECONDS="0.05", TICK_BATCH_WINDOW_MS="50",
                      **extra_env)
    checker.take_failures()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(worker_process(env))
        web = await stack.enter_async_context(web_process(env))
        streamer_url = (await stack.enter_async_context(streamer_process(env))).url if streamer else None
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Stack(web.url, sim, chain[len(chain) // 2], http, checker, chain, settings, streamer_url)
    failures = checker.take_failures()
    assert not failures, "\n".join(failures)


@pytest_asyncio.fixture
async def stack(e2e_database, redis_url, kitesim, spec_checker) -> AsyncIterator[Stack]:
    async with running_stack(e2e_database, redis_url, kitesim, spec_checker) as running:
        yield running


def order_body(stack: Stack, **change: Any) -> dict[str, Any]:
    return {"exchange": "NFO", "tradingsymbol": stack.option["tradingsymbol"], "transaction_type": "BUY",
            "quantity": stack.option["lot_size"], "product": "NRML", "order_type": "MARKET", **change}


async def test_place_poll_complete_once_per_idempotency_key(stack: Stack) -> None:
    headers = {"Idempotency-Key": f"e2e-{uuid.uuid4().hex}"}
    status, accepted = await stack.call("POST", "/orders", "/orders", json=order_body(stack), headers=headers)
    assert status == 202
    status, again = await stack.call("POST", "/orders", "/orders", json=order_body(stack), headers=headers)
    assert status == 202 and again["job_id"] == accepted["job_id"]

    status, job = await stack.call("GET", f"{accepted['status_url']}?wait=20", "/jobs/{job_id}")
    assert status == 200 and job["status"] == "complete", job
    kite_order_id = job["result"]["kite_order_id"]
    assert kite_order_id

    orders = stack.sim.state.orders.orders_of(stack.sim.account.api_key)
    assert [o["order_id"] for o in orders] == [kite_order_id]  # one order at Kite for the two requests

    status, audit = await stack.call("GET", "/orders?limit=10", "/orders")
    assert [o["kite_order_id"] for o in audit["orders"]] == [kite_order_id]


async def test_invalid_order_is_refused_before_any_queue(stack: Stack) -> None:
    status, err = await stack.call("POST", "/orders", "/orders", json=order_body(stack, quantity=1))
    assert status == 422 and err["error"]["details"][0]["field"] == "quantity"
    status, audit = await stack.call("GET", "/orders", "/orders")
    assert audit["orders"] == []
    assert stack.sim.state.orders.orders_of(stack.sim.account.api_key) == []


async def test_history_twice_is_one_job_with_greeks_on_every_candle(stack: Stack) -> None:
    from datetime import date, timedelta

    day = date.today() - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    query = (f"/history?instrument_token={stack.option['instrument_token']}&from={day}T09:15:00"
             f"&to={day}T15:30:00&interval=5minute&greeks=true")
    status, first = await stack.call("GET", query, "/history")
    assert status == 202
    status, second = await stack.call("GET", query, "/history")
    assert status == 202 and second["job_id"] == first["job_id"]

    status, job = await stack.call("GET", f"{first['status_url']}?wait=25", "/jobs/{job_id}")
    assert status == 200 and job["status"] == "complete", job
    result = job["result"]
    columns = result["columns"]
    assert {"iv", "delta", "gamma", "theta", "vega"} <= set(columns)
    assert result["count"] == len(result["candles"]) > 0
    for name in ("iv", "delta", "gamma", "theta", "vega"):
        at = columns.index(name)
        assert all(row[at] is not None for row in result["candles"]), name
    status, third = await stack.call("GET", query, "/history")
    assert third["job_id"] == first["job_id"] and third["duplicate"] is True  # answered from the kept result


async def test_a_ws_client_gets_only_its_tokens_from_the_live_stream(e2e_database, redis_url, kitesim,
                                                                      spec_checker) -> None:
    """Stand-in → streamer → Redis → web → WebSocket: five of ten streamed options, nothing else."""
    async with running_stack(e2e_database, redis_url, kitesim, spec_checker, streamer=True) as stack:
        middle = len(stack.chain) // 2
        streamed = [c["instrument_token"] for c in stack.chain[middle - 5:middle + 5]]
        for token in streamed:
            status, _ = await stack.call("POST", "/subscriptions", "/subscriptions",
                                         json={"instrument_token": token, "requested_mode": "FULL"})
            assert status in (200, 201)
        mine = set(streamed[::2])
        ws = await stack.http.ws_connect(f"{stack.url}/ws/ticks")
        assert (await ws.receive_json())["type"] == "connected"
        await ws.send_json({"action": "subscribe", "tokens": sorted(mine)})
        seen: dict[int, dict] = {}
        async with asyncio.timeout(30):
            while set(seen) != mine or len(seen) < 5:
                message = await ws.receive_json()
                if message["type"] == "tick":
                    token = message["data"]["instrument_token"]
                    assert token in mine, f"tick for {token}, not subscribed"
                    seen[token] = message["data"]
        await ws.close()
    assert all(tick.get("iv") is not None and tick.get("delta") is not None for tick in seen.values())
