"""The tick bus on a Redis of its own (TICK_REDIS_URL), end to end with real processes: the
streamer publishes there, `/ws/ticks`, `GET /quotes` and `ticker.client.RedisFeed` read from
there, the web publishes Kite's order postbacks there, and nothing of it lands on REDIS_URL, where
orders still go through the queue. The tick-bus Redis is then killed and started again mid-stream:
both health endpoints say so meanwhile, and ticks flow again by themselves."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from tests.streamer.redis_server import RedisServer
from tests.web.conftest import fresh_database
from tests.web.test_e2e import Stack, order_body, running_stack
from tests.web.test_gtt_e2e import WAIT, completed, sim_admin
from ticker.client import FeedEvent, RedisFeed, TickBatch
from ticker.infra.queue.enqueue import names_for
from ticker.infra.stores.redis import connect

pytestmark = pytest.mark.timeout(420)


@pytest_asyncio.fixture
async def database(_server_urls) -> AsyncIterator[str]:
    with fresh_database(_server_urls[1], f"ticker_tb_{uuid.uuid4().hex[:8]}") as url:
        yield url


class WsTicks:
    """A /ws/ticks client of the web, keeping when each tick of its token arrived."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.arrived: list[float] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            doc = message.json()
            if doc["type"] == "tick":
                self.arrived.append(time.monotonic())

    def since(self, moment: float) -> int:
        return sum(1 for at in self.arrived if at > moment)


class FeedTicks:
    """A RedisFeed on the tick bus, read in the background."""

    def __init__(self, feed: RedisFeed) -> None:
        self.feed = feed
        self.arrived: list[tuple[float, FeedEvent]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.feed:
            self.arrived.append((time.monotonic(), event))

    def batches_since(self, moment: float) -> int:
        return sum(1 for at, e in self.arrived if at > moment and isinstance(e, TickBatch))


async def until(check: Any, what: str) -> None:
    """Wait for `check()` (sync or async) to hold."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                result = check()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(what) from None


async def get_json(stack: Stack, url: str) -> tuple[int, dict]:
    async with stack.http.get(url) as resp:
        return resp.status, await resp.json()


async def quote(stack: Stack, token: int) -> dict | None:
    status, doc = await stack.call("GET", f"/quotes?tokens={token}", "/quotes")
    if status == 503:  # a socket of the pool's that outlived a restart: the next request has a new one
        return None
    assert status == 200, doc
    return doc["quotes"].get(str(token))


async def keys(redis: Redis, pattern: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=pattern, count=1000)]


async def numsub(redis: Redis, channel: str) -> int:
    return int(dict(await redis.pubsub_numsub(channel))[channel.encode()])


@contextlib.asynccontextmanager
async def background(*tasks: asyncio.Task) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def test_the_tick_bus_lives_on_its_own_redis_and_rides_through_its_restart(
        database, redis_url, kitesim, spec_checker, tmp_path) -> None:
    bus = RedisServer(tmp_path / "tick-bus")
    bus.start()
    main, ticks = connect(redis_url), connect(bus.url)
    try:
        async with running_stack(database, redis_url, kitesim, spec_checker, streamer=True,
                                 TICK_REDIS_URL=bus.url) as stack:
            await _through_the_bus(stack, bus, main, ticks)
    finally:
        await main.aclose()
        await ticks.aclose()
        bus.kill()


async def _through_the_bus(stack: Stack, bus: RedisServer, main: Redis, ticks: Redis) -> None:
    names, token = names_for(stack.settings), stack.option["instrument_token"]
    prefix = names.prefix
    ws, client = await streaming(stack)
    feed = FeedTicks(RedisFeed(bus.url, prefix=names.prefix, tokens=[token], orders=True, backoff=(0.05, 0.5)))
    async with background(client.task, feed.task):
        # ticks reach the web's socket, the client feed and GET /quotes, all from the tick bus
        await until(lambda: client.since(0) > 0 and feed.batches_since(0) > 0, "no ticks through the bus")
        await until(lambda: quote(stack, token), "GET /quotes found no tick")

        # an order: queued on REDIS_URL, done by the worker; Kite's postback published on the bus
        status, accepted = await stack.call("POST", "/orders", "/orders", json=order_body(stack))
        assert status == 202
        order_id = (await completed(stack, accepted))["kite_order_id"]
        await until(lambda: _order_seen(feed, order_id), "the order's postback never reached the bus")

        # what is on which Redis
        on_main = await keys(main, f"{prefix}:*")
        assert on_main == [], on_main
        on_bus = {k.decode() for k in await keys(ticks, f"{prefix}:*")}
        assert {names.latest, names.ticks_history, names.orders_history, names.sequence} <= on_bus
        assert await keys(ticks, f"{stack.settings.redis_namespace}:*") == []  # queues, leases, beats stay home
        assert await keys(main, f"{stack.settings.redis_namespace}:heartbeat:*")
        assert await numsub(main, names.options) == 0 and await numsub(main, names.orders) == 0
        assert await numsub(ticks, names.options) >= 1 and await numsub(ticks, names.orders) >= 1

        status, health = await stack.call("GET", "/health", "/health")  # held to the spec, tick_redis included
        assert health["checks"]["tick_redis"]["ok"] is True, health
        assert stack.streamer_url is not None
        _, streamer = await get_json(stack, f"{stack.streamer_url}/health")
        assert streamer["tick_redis"]["up"] is True, streamer

        # the tick bus dies under everyone; the rest goes on
        bus.kill()
        await until(lambda: _web_sees_it_down(stack), "the web's /health never said the tick bus was down")
        await until(lambda: _streamer_sees_it_down(stack), "the streamer's /health never said so")
        async with stack.http.get(f"{stack.streamer_url}/metrics") as resp:
            exposed = (await resp.text()).splitlines()
        assert "ticker_streamer_tick_redis_up 0.0" in exposed and "ticker_streamer_redis_up 1.0" in exposed
        status, _ = await stack.call("GET", "/subscriptions", "/subscriptions")  # REDIS_URL's and Postgres' work
        assert status == 200

        bus.start()  # same port, empty
        back = time.monotonic()
        await until(lambda: client.since(back) > 0, "ticks never reached /ws/ticks again")
        await until(lambda: feed.batches_since(back) > 0, "ticks never reached the RedisFeed again")
        await until(lambda: quote(stack, token), "GET /quotes never answered again")
        await until(lambda: _web_sees_it_up(stack), "the web's /health never said the tick bus was back")
        assert await keys(main, f"{prefix}:*") == []
    await ws.close()


async def streaming(stack: Stack) -> tuple[aiohttp.ClientWebSocketResponse, WsTicks]:
    """The stack's option streamed, Kite's postbacks sent to the web, and a /ws/ticks client on the option."""
    token = stack.option["instrument_token"]
    await sim_admin(stack, "POST", "/_sim/postbacks/url", {"url": f"{stack.url}/kite/postback"})
    status, _ = await stack.call("POST", "/subscriptions", "/subscriptions", json={"instrument_token": token})
    assert status in (200, 201)
    ws = await stack.http.ws_connect(f"{stack.url}/ws/ticks")
    await ws.send_json({"action": "subscribe", "tokens": [token]})
    return ws, WsTicks(ws)


def _order_seen(feed: FeedTicks, order_id: str) -> bool:
    return any(getattr(e, "items", None) and any(isinstance(u, dict) and u.get("order_id") == order_id
                                                 for u in e.items)
               for _, e in feed.arrived if not isinstance(e, TickBatch))


async def _web_sees_it_down(stack: Stack) -> bool:
    status, health = await stack.call("GET", "/health", "/health")
    # ticks stop, orders go on: degraded, not down
    return status == 200 and health["checks"]["tick_redis"]["ok"] is False and health["status"] == "degraded"


async def _web_sees_it_up(stack: Stack) -> bool:
    _, health = await stack.call("GET", "/health", "/health")
    return bool(health["checks"]["tick_redis"]["ok"])


async def _streamer_sees_it_down(stack: Stack) -> bool:
    _, health = await get_json(stack, f"{stack.streamer_url}/health")
    return health["tick_redis"]["up"] is False and "tick-bus Redis unreachable" in health.get("reason", "")
