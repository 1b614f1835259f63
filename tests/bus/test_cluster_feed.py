"""The tick bus on a real Redis Cluster (3 masters, 3 replicas): the streamer's publisher shards
ticks by underlying and order updates into their own shard, `ticker.client`'s RedisFeed follows
every shard the directory names (and one it names later), and a master killed mid-stream is
failed over with the feed missing nothing the cluster still holds and getting nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio.cluster import RedisCluster

from tests.redis_cluster import LocalCluster
from tests.waiting import GENEROUS, wait_for
from ticker.client import OrderUpdates, RedisFeed, StreamGap, TickBatch
from ticker.core.contracts import ORDERS_SHARD, Names
from ticker.infra.runtime.settings import load_settings
from ticker.infra.stores.tick_bus import BusListener
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.publish import Publisher
from ticker.streamer.stages.publish_breaker import PublishBreaker
from ticker.streamer.stages.render import Outgoing


def tick(token: int) -> bytes:
    return orjson.dumps({"instrument_token": token, "last_price": 1.5})


def flush(tokens: list[int], shard: str, orders: list[int] = ()) -> Outgoing:  # type: ignore[assignment]
    return Outgoing(options=[tick(t) for t in tokens], option_shards=[shard] * len(tokens),
                    orders=[orjson.dumps({"order_id": str(o)}) for o in orders])


@pytest.fixture
def names() -> Names:
    return Names(f"t{uuid.uuid4().hex[:8]}:nifty", "t")


@pytest.fixture
async def publisher(redis_cluster: LocalCluster, names: Names) -> AsyncIterator[Publisher]:
    made = Publisher(None, names, PublishBreaker(0.05), StreamerMetrics(), batch_max=100, timeout=5.0,
                     cluster_url=redis_cluster.url)
    yield made
    await made.close()


class Collector:
    """Runs a feed in a task and keeps its events."""

    def __init__(self, feed: RedisFeed) -> None:
        self.feed, self.events = feed, []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.feed:
            self.events.append(event)

    def tokens(self) -> list[int]:
        return [t["instrument_token"] for e in self.events if isinstance(e, TickBatch) for t in e.items]

    def orders(self) -> list[str]:
        return [u["order_id"] for e in self.events if isinstance(e, OrderUpdates) for u in e.items]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def subscribed(cluster: LocalCluster, channel: str) -> None:
    """Wait until a sharded subscriber listens on `channel` at its master."""
    async def listening() -> bool:
        try:
            reply = await asyncio.to_thread(cluster.master_for(channel).call, "PUBSUB", "SHARDNUMSUB", channel)
        except Exception:  # the cluster settling
            return False
        return isinstance(reply, list) and int(reply[1]) > 0

    listening.__name__ = f"a subscriber on {channel}"
    await wait_for(listening)


async def test_the_feed_follows_every_shard_and_one_named_later(redis_cluster: LocalCluster, names: Names,
                                                                 publisher: Publisher) -> None:
    assert await publisher.publish(flush([1], "NIFTY", orders=[1]))  # before the feed: not delivered
    feed = Collector(RedisFeed(redis_cluster.url, prefix=names.prefix, cluster=True, orders=True, name="feed-test"))
    try:
        await subscribed(redis_cluster, names.shard("NIFTY").options)
        await subscribed(redis_cluster, names.shard(ORDERS_SHARD).orders)
        for n in range(2, 12):
            assert await publisher.publish(flush([n], "NIFTY", orders=[n]))
        # a shard new to the directory: the feed subscribes to it and reads it from its start
        assert await publisher.publish(flush([100, 101], "BANKNIFTY"))
        assert await publisher.publish(flush([102], "BANKNIFTY"))

        async def all_in() -> bool:
            return sorted(feed.tokens()) == [*range(2, 12), 100, 101, 102] and len(feed.orders()) == 10

        await wait_for(all_in)
        assert feed.tokens()[:10] == list(range(2, 12))  # a shard's ticks in the order published
        assert feed.orders() == [str(n) for n in range(2, 12)]
        assert not [e for e in feed.events if isinstance(e, StreamGap)]
        positions = feed.feed.positions
        assert {"ticks:NIFTY", "ticks:BANKNIFTY", "orders"} <= set(positions)
        assert positions["ticks:NIFTY"].epoch != positions["ticks:BANKNIFTY"].epoch  # each shard counts on its own
        channels = {e.channel for e in feed.events if isinstance(e, TickBatch)}
        assert channels == {names.shard("NIFTY").options, names.shard("BANKNIFTY").options}
    finally:
        await feed.stop()


async def test_a_master_killed_mid_stream_is_failed_over_without_loss_or_repeats(
        redis_cluster: LocalCluster, names: Names, publisher: Publisher) -> None:
    shard = names.shard("NIFTY")
    published: list[int] = []
    sent = 0

    async def stream() -> None:  # the streamer's flushes, one tick each, paced like a steady feed
        nonlocal sent
        while True:
            sent += 1
            if await publisher.publish(flush([sent], "NIFTY")):
                published.append(sent)
            await asyncio.sleep(0.005)

    assert await publisher.publish(flush([0], "NIFTY"))  # the shard exists; the feed starts after it
    feed = Collector(RedisFeed(redis_cluster.url, prefix=names.prefix, cluster=True, name="failover-test",
                               backoff=(0.05, 0.5)))
    victim = redis_cluster.master_for(shard.options)
    producer: asyncio.Task | None = None
    try:
        await subscribed(redis_cluster, shard.options)
        producer = asyncio.create_task(stream())
        await wait_for(lambda: _has(published, 50), GENEROUS)
        redis_cluster.kill(victim)
        successor = await redis_cluster.wait_failover(victim)
        assert successor.port != victim.port
        after_failover = sent
        await wait_for(lambda: _has([p for p in published if p > after_failover], 50), GENEROUS)
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer

        held = [t for t in await _history_tokens(redis_cluster.url, shard.ticks_history) if t > 0]
        assert [t for t in held if t > after_failover]  # the promoted replica took the stream on

        async def caught_up() -> bool:
            return set(held) <= set(feed.tokens())

        await wait_for(caught_up)
        got = feed.tokens()
        assert len(got) == len(set(got)), "a tick was delivered twice"
        assert set(got) <= set(range(1, sent + 1))  # nothing the publisher did not send
        assert got == sorted(got)  # in the order published, across the failover
    finally:
        if producer is not None:
            producer.cancel()
        await feed.stop()
        redis_cluster.restart(victim)
        await redis_cluster.wait_rejoined(victim)


async def _has(items: list, n: int) -> bool:
    return len(items) >= n


async def _history_tokens(url: str, key: str) -> list[int]:
    """Every tick token the stream `key` holds, as the cluster has it now."""
    client = RedisCluster.from_url(url)
    try:
        entries = await client.xrange(key)
    finally:
        await client.aclose()
    return [t["instrument_token"] for _, fields in entries for t in orjson.loads(fields[b"d"])]


async def test_a_bus_listener_hears_every_shard_and_one_named_later(redis_cluster: LocalCluster, names: Names,
                                                                     publisher: Publisher) -> None:
    """What `ticker tail` and the worker's postback consumer read: one kind of channel, every shard."""
    settings = load_settings(redis_url="redis://127.0.0.1:1/0", tick_redis_url=redis_cluster.url,
                             tick_redis_cluster=True)
    assert await publisher.publish(flush([1], "NIFTY", orders=[1]))
    ticks = BusListener(settings, names, "options", name="listener-test")
    orders = BusListener(settings, names, "orders", name="listener-test")
    await ticks.start()
    await orders.start()
    try:
        assert await publisher.publish(flush([2], "NIFTY", orders=[2]))
        assert await publisher.publish(flush([3], "FINNIFTY"))  # announced now: heard from a later message on
        heard: list[int] = []
        updates: list[str] = []
        later = 100
        async with asyncio.timeout(GENEROUS):
            while not [t for t in heard if t > 100] or not updates:
                later += 1  # FINNIFTY ticks until the listener, told of the shard, hears one
                assert await publisher.publish(flush([later], "FINNIFTY"))
                for listener, into, key in ((ticks, heard, "ticks"), (orders, updates, "updates")):
                    data = await listener.get(timeout=0.05)
                    if data is not None:
                        into += [i.get("instrument_token") or i.get("order_id") for i in orjson.loads(data)[key]]
        assert heard[0] == 2 and 1 not in heard
        assert updates == ["2"]
    finally:
        await ticks.close()
        await orders.close()
