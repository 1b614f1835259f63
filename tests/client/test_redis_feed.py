"""`ticker.client.RedisFeed` against a real Redis, with messages published by the streamer's own
sequencing script (`publish_sequenced`): a feed whose connections are killed while messages flow
resumes with every message once; an offset older than history yields a gap, then what stands in.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
from redis.asyncio import Redis

from tests.waiting import wait_for
from ticker.client import (
    CHAIN_STREAM,
    ORDER_STREAM,
    TICK_STREAM,
    ChainUpdates,
    FeedEvent,
    OrderUpdates,
    RedisFeed,
    Snapshot,
    StreamGap,
    StreamPosition,
    TickBatch,
)
from ticker.core.contracts import Names
from ticker.infra.stores.tick_history import publish_sequenced

BOUND = 60.0  # seconds; only a broken system waits this long


def fresh_names() -> Names:
    return Names(f"ticker:c{uuid.uuid4().hex[:8]}")


async def publish(redis: Redis, channel: str, names: Names, items: list[dict]) -> None:
    await publish_sequenced(redis, names, channel, [orjson.dumps(i) for i in items], envelope=True, history_seconds=300)


async def take(events: AsyncIterator[FeedEvent], count: int) -> list[FeedEvent]:
    async with asyncio.timeout(BOUND):
        return [await anext(events) for _ in range(count)]


async def subscribed(redis: Redis, channel: str) -> None:
    async def feed_listens() -> bool:
        return dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1

    await wait_for(feed_listens)


async def kill_clients(redis: Redis, name: str) -> int:
    """Close every connection Redis has for the client `name` (the feed's pub/sub and commands)."""
    ids = [c["id"] for c in await redis.client_list() if c.get("name") == name]
    for client_id in ids:
        await redis.client_kill_filter(_id=client_id)
    return len(ids)


def delivered_once(got: list[FeedEvent], ticks: list[list[dict]], orders: list[dict]) -> None:
    """`got` holds every published tick of the feed's tokens (not 99's) and every order update,
    in order, each once, and no gap."""
    assert [t for e in got if isinstance(e, TickBatch) for t in e.items] == \
        [t for batch in ticks for t in batch if t["instrument_token"] != 99]
    assert [u for e in got if isinstance(e, OrderUpdates) for u in e.items] == orders
    assert not [e for e in got if isinstance(e, StreamGap | Snapshot)]


async def test_a_feed_cut_off_while_messages_flow_resumes_with_every_message_once(redis: Redis, redis_url: str) -> None:
    names, name = fresh_names(), f"feed-{uuid.uuid4().hex[:8]}"
    feed = RedisFeed(redis_url, prefix=names.prefix, tokens=[1, 2], orders=True, name=name, backoff=(0.05, 0.5))
    events = feed.events()
    first = asyncio.ensure_future(anext(events))  # the feed connects and subscribes
    await subscribed(redis, names.orders)
    ticks = [[{"instrument_token": 1, "last_price": 100.0 + i}, {"instrument_token": 99, "last_price": 1.0},
              {"instrument_token": 2, "last_price": 200.0 + i}] for i in range(20)]
    orders = [{"order_id": str(i), "status": "OPEN"} for i in range(20)]
    for i in range(10):
        await publish(redis, names.underlying if i % 2 else names.options, names, ticks[i])
        await publish(redis, names.orders, names, [orders[i]])
    got = [await asyncio.wait_for(first, BOUND), *await take(events, 4)]

    # Cut off with messages still unread; more are published while the feed is away.
    assert await kill_clients(redis, name) >= 1
    for i in range(10, 20):
        await publish(redis, names.options, names, ticks[i])
        await publish(redis, names.orders, names, [orders[i]])

    async with asyncio.timeout(BOUND):
        while not (isinstance(got[-1], OrderUpdates) and got[-1].items == [orders[-1]]):
            got.append(await anext(events))
    await events.aclose()
    assert feed.reconnects >= 1
    delivered_once(got, ticks, orders)
    tick_offsets = [e.offset for e in got if isinstance(e, TickBatch)]
    assert len(set(tick_offsets)) == 20 and feed.positions[TICK_STREAM].offset == tick_offsets[-1]
    assert [e.seq for e in got if isinstance(e, OrderUpdates)] == list(range(1, 21))


async def test_an_offset_older_than_history_yields_a_gap_then_the_snapshot(redis: Redis, redis_url: str) -> None:
    names = fresh_names()
    await publish(redis, names.options, names, [{"instrument_token": 21, "last_price": 3.0}])
    await publish(redis, names.orders, names, [{"order_id": "7", "status": "COMPLETE"}])
    await redis.hset(names.latest, mapping={"21": orjson.dumps({"instrument_token": 21, "last_price": 3.5}),
                                            "22": orjson.dumps({"instrument_token": 22, "last_price": 9.0})})
    epoch = (await redis.hget(names.sequence, "epoch")).decode()
    oldest_tick = (await redis.xrange(names.ticks_history, count=1))[0][0].decode()
    oldest_order = (await redis.xrange(names.orders_history, count=1))[0][0].decode()
    lost = StreamPosition("1-0", epoch)
    feed = RedisFeed(redis_url, prefix=names.prefix, tokens=[21], orders=True,
                     since={TICK_STREAM: lost, ORDER_STREAM: lost})
    events = feed.events()
    assert await take(events, 4) == [
        StreamGap(TICK_STREAM, "1-0", oldest_tick, "trimmed", epoch),
        Snapshot(TICK_STREAM, [{"instrument_token": 21, "last_price": 3.5}]),
        StreamGap(ORDER_STREAM, "1-0", oldest_order, "trimmed", epoch),
        OrderUpdates([{"order_id": "7", "status": "COMPLETE"}], oldest_order, epoch, 1),  # all history holds
    ]
    await subscribed(redis, names.options)
    await publish(redis, names.options, names, [{"instrument_token": 21, "last_price": 4.0}])
    live = (await take(events, 1))[0]
    assert isinstance(live, TickBatch) and live.items == [{"instrument_token": 21, "last_price": 4.0}]
    assert live.seq == 2 and live.channel == names.options
    await events.aclose()

    other = RedisFeed(redis_url, prefix=names.prefix, tokens=[21], since={TICK_STREAM: StreamPosition(oldest_tick, "old")})
    events = other.events()
    gap, snapshot = await take(events, 2)
    assert isinstance(gap, StreamGap) and (gap.reason, gap.epoch) == ("epoch_changed", epoch)
    assert isinstance(snapshot, Snapshot) and snapshot.items == [{"instrument_token": 21, "last_price": 3.5}]
    await events.aclose()


async def test_a_later_feed_resumes_the_chain_stream_from_an_earlier_ones_positions(redis: Redis, redis_url: str) -> None:
    names = fresh_names()
    chains = [{"underlying": "NIFTY", "expiry": "2026-12-31", "atm_iv": 0.1 + i / 100} for i in range(3)]
    feed = RedisFeed(redis_url, prefix=names.prefix, ticks=False, chains=True)
    events = feed.events()
    first = asyncio.ensure_future(anext(events))
    await subscribed(redis, names.chain)
    await publish(redis, names.chain, names, [chains[0]])
    assert isinstance(got := await asyncio.wait_for(first, BOUND), ChainUpdates) and got.items == [chains[0]]
    await events.aclose()

    await publish(redis, names.chain, names, [chains[1]])  # while no feed runs
    later = RedisFeed(redis_url, prefix=names.prefix, ticks=False, chains=True, since=feed.positions)
    events = later.events()
    replayed = (await take(events, 1))[0]
    assert isinstance(replayed, ChainUpdates) and (replayed.items, replayed.seq) == ([chains[1]], 2)
    await publish(redis, names.chain, names, [chains[2]])
    live = (await take(events, 1))[0]
    assert isinstance(live, ChainUpdates) and (live.items, live.seq) == ([chains[2]], 3)
    assert later.positions[CHAIN_STREAM] == StreamPosition(live.offset or "", live.epoch or "")
    await events.aclose()



async def test_bare_arrays_have_nothing_to_resume_from_so_a_lost_connection_is_a_gap(redis: Redis, redis_url: str) -> None:
    """TICK_MESSAGE_FORMAT=array: messages come through without offsets; after a lost connection
    the feed cannot know what it missed, and says so before the latest ticks."""
    names, name = fresh_names(), f"feed-{uuid.uuid4().hex[:8]}"
    feed = RedisFeed(redis_url, prefix=names.prefix, tokens=[5], name=name, backoff=(0.05, 0.5))
    events = feed.events()
    first = asyncio.ensure_future(anext(events))
    await subscribed(redis, names.options)
    await publish_sequenced(redis, names, names.options, [orjson.dumps({"instrument_token": 5, "last_price": 1.0})],
                            envelope=False, history_seconds=300)
    assert await asyncio.wait_for(first, BOUND) == \
        TickBatch([{"instrument_token": 5, "last_price": 1.0}], None, None, None, names.options)
    await redis.hset(names.latest, "5", orjson.dumps({"instrument_token": 5, "last_price": 2.0}))
    assert await kill_clients(redis, name) >= 1
    assert await take(events, 2) == [StreamGap(TICK_STREAM, "0-0", None, "history_off", None),
                                     Snapshot(TICK_STREAM, [{"instrument_token": 5, "last_price": 2.0}])]
    assert feed.reconnects >= 1
    await events.aclose()
