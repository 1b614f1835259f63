"""`ticker.client.WsFeed` against the real web app: it resumes across a web restart with every
message once, turns the server's `gap` into a `StreamGap` and its stand-in into a `Snapshot`,
authenticates with a JWT it fetches itself, and gives up on refused credentials.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from tests.client.test_redis_feed import delivered_once
from tests.web.conftest import API_KEY
from tests.web.seed import EXPIRY
from tests.web.test_chain import write_chain
from tests.web.test_ws_resume import channel_names, publish
from ticker.client import (
    CHAIN_STREAM,
    ORDER_STREAM,
    TICK_STREAM,
    ChainUpdates,
    FeedEvent,
    OrderUpdates,
    Snapshot,
    StreamGap,
    StreamPosition,
    TickBatch,
    WsFeed,
)
from ticker.http.state import SERVICES

BOUND = 60.0  # seconds; only a broken system waits this long
JWT_SECRET = "f" * 32


async def take(events: AsyncIterator[FeedEvent], count: int) -> list[FeedEvent]:
    async with asyncio.timeout(BOUND):
        return [await anext(events) for _ in range(count)]


async def until(events: AsyncIterator[FeedEvent], got: list[FeedEvent], *last: object) -> None:
    """Take events into `got` until the items `last` (the last published tick, the last order
    update) have all come."""
    async with asyncio.timeout(BOUND):
        while not all(any(isinstance(e, TickBatch | OrderUpdates) and item in e.items for e in got) for item in last):
            got.append(await anext(events))


async def test_a_ws_feed_resumes_across_a_web_restart(make_api, redis) -> None:
    prefix = f"ticker:f{uuid.uuid4().hex[:8]}"
    web = {"api": await make_api(api_key=API_KEY, publish_channel_prefix=prefix)}
    assert await web["api"].app[SERVICES].hub.wait_ready(30)
    names = channel_names(web["api"])
    await redis.hset(names.latest, "11", orjson.dumps({"instrument_token": 11, "last_price": 0.5}))
    feed = WsFeed(lambda: str(web["api"].make_url("/")), api_key=API_KEY, tokens=[11, 12], orders=True,
                  backoff=(0.05, 0.5))
    events = feed.events()
    assert await take(events, 1) == [Snapshot(TICK_STREAM, [{"instrument_token": 11, "last_price": 0.5}])]

    ticks = [[{"instrument_token": 11, "last_price": 1.0 + i}, {"instrument_token": 99, "last_price": 0.0},
              {"instrument_token": 12, "last_price": 50.0 + i}] for i in range(8)]
    orders = [{"order_id": str(i), "status": "OPEN"} for i in range(8)]
    for i in range(3):
        await publish(redis, names, names.options, ticks[i])
        await publish(redis, names, names.orders, [orders[i]])
    got: list[FeedEvent] = []
    await until(events, got, ticks[2][-1], orders[2])

    await web["api"].close()  # the web goes away with the feed's socket; messages keep coming
    for i in range(3, 7):
        await publish(redis, names, names.underlying, ticks[i])
        await publish(redis, names, names.orders, [orders[i]])
    web["api"] = await make_api(api_key=API_KEY, publish_channel_prefix=prefix)
    assert await web["api"].app[SERVICES].hub.wait_ready(30)  # the feed reconnects only when read again
    await publish(redis, names, names.options, ticks[7])
    await publish(redis, names, names.orders, [orders[7]])
    await until(events, got, ticks[7][-1], orders[7])
    await events.aclose()

    assert feed.reconnects >= 1
    delivered_once(got, ticks, orders)
    history = [i.decode() for i, _ in await redis.xrange(names.orders_history)]
    assert feed.positions[ORDER_STREAM].offset == history[-1]


async def test_a_ws_feed_turns_a_gap_into_an_event_and_fetches_its_own_jwt(make_api, redis) -> None:
    api = await make_api(api_key=API_KEY, jwt_secret=JWT_SECRET, publish_channel_prefix=f"ticker:f{uuid.uuid4().hex[:8]}")
    assert await api.app[SERVICES].hub.wait_ready(30)
    names = channel_names(api)
    await publish(redis, names, names.options, [{"instrument_token": 21, "last_price": 3.0}])
    await redis.hset(names.latest, "21", orjson.dumps({"instrument_token": 21, "last_price": 3.0}))
    epoch = (await redis.hget(names.sequence, "epoch")).decode()
    oldest = (await redis.xrange(names.ticks_history, count=1))[0][0].decode()
    fetched = 0

    async def token() -> str:
        nonlocal fetched
        fetched += 1
        answer = await api.post("/auth/token", headers={"X-API-Key": API_KEY})
        return (await answer.json())["token"]

    feed = WsFeed(str(api.make_url("/")), token=token, tokens=[21],
                  since={TICK_STREAM: StreamPosition("1-0", epoch)})
    events = feed.events()
    assert await take(events, 2) == [StreamGap(TICK_STREAM, "1-0", oldest, "trimmed", epoch),
                                     Snapshot(TICK_STREAM, [{"instrument_token": 21, "last_price": 3.0}])]
    await publish(redis, names, names.options, [{"instrument_token": 21, "last_price": 4.0}])
    live = (await take(events, 1))[0]
    assert isinstance(live, TickBatch) and live.items == [{"instrument_token": 21, "last_price": 4.0}]
    assert feed.positions[TICK_STREAM] == StreamPosition(live.offset or "", epoch) and fetched == 1
    await events.aclose()

    refused = WsFeed(str(api.make_url("/")), api_key="wrong-key", tokens=[21]).events()
    with pytest.raises(PermissionError):
        await take(refused, 1)


async def test_a_ws_feed_follows_a_chain_and_a_later_one_resumes_it(make_api, redis) -> None:
    api = await make_api(publish_channel_prefix=f"ticker:f{uuid.uuid4().hex[:8]}")
    assert await api.app[SERVICES].hub.wait_ready(30)
    names = channel_names(api)
    await write_chain(redis, names, time.time())

    def update(underlying: str, n: int) -> dict:
        return {"underlying": underlying, "expiry": EXPIRY.isoformat(), "rows": [], "n": n, "full": False}

    feed = WsFeed(str(api.make_url("/")), chain=("NIFTY", None))
    events = feed.events()
    whole = (await take(events, 1))[0]  # the whole chain starts the subscription
    assert isinstance(whole, Snapshot) and whole.stream == CHAIN_STREAM and whole.items[0]["full"] is True
    await publish(redis, names, names.chain, [update("NIFTY", 0)])
    assert [e.items for e in await take(events, 1) if isinstance(e, ChainUpdates)] == [[update("NIFTY", 0)]]
    await events.aclose()

    await publish(redis, names, names.chain, [update("NIFTY", 1), update("BANKNIFTY", 1)])
    await publish(redis, names, names.chain, [update("NIFTY", 2)])
    later = WsFeed(str(api.make_url("/")), chain=("NIFTY", None), since=feed.positions)
    events = later.events()
    resumed = await take(events, 2)  # only NIFTY's, and not the whole chain again
    assert all(isinstance(e, ChainUpdates) for e in resumed)
    assert [e.items for e in resumed if isinstance(e, ChainUpdates)] == [[update("NIFTY", 1)], [update("NIFTY", 2)]]
    await events.aclose()
