"""Sharded pub/sub over a real Redis Cluster (3 masters, 3 replicas): the slot map, SSUBSCRIBE on
each master through `ShardSubscriber`, and its recovery when a channel's master is killed and
replaced, or hands its slots to its replica, while a publisher keeps publishing."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.redis_cluster import ClusterNode, LocalCluster, ShardPublisher
from tests.waiting import GENEROUS, wait_for
from ticker.infra.stores.cluster_map import ClusterMap, key_slot
from ticker.infra.stores.shard_subscriber import Resubscribed, ShardSubscriber


def channel_on(cluster: LocalCluster, port: int) -> bytes:
    """A fresh tick channel (hash-tagged by underlying, as the streamer names them) whose slot the
    master on `port` serves."""
    prefix = uuid.uuid4().hex[:8]
    for i in range(10_000):
        channel = f"ticker:t{prefix}:{{U{i}}}:options".encode()
        if cluster.master_for(channel).port == port:
            return channel
    raise AssertionError(f"no channel found on {port}")


async def events_until(sub: ShardSubscriber, done, timeout: float = GENEROUS) -> list:
    """Events read until `done(event)` holds for one (which is the last)."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        event = await sub.get_message(timeout=1.0)
        if event is None:
            continue
        seen.append(event)
        if done(event):
            return seen
    pytest.fail(f"not seen within {timeout}s; last events: {seen[-5:]}")


def number_at_least(channel: bytes, n: int):
    def done(event) -> bool:
        return not isinstance(event, Resubscribed) and event[0] == channel and int(event[1]) >= n
    return done


async def flowing(sub: ShardSubscriber, publisher: ShardPublisher) -> None:
    """Wait for a message the publisher sends from now on (so: sent after whatever came before)."""
    await events_until(sub, number_at_least(publisher.channel, publisher.acked))


async def back_after_a_gap(sub: ShardSubscriber, publisher: ShardPublisher) -> Resubscribed:
    """The next Resubscribed marker, once messages published after it arrive too."""
    seen = await events_until(sub, lambda e: isinstance(e, Resubscribed))
    await flowing(sub, publisher)
    return seen[-1]


async def holding_only(sub: ShardSubscriber, node: ClusterNode) -> None:
    """Wait until the subscriber holds a connection to `node` alone (an idle one is let go after
    the subscribing that made it idle)."""
    async def holds_only_that_node() -> bool:
        return sub.connected == {node.address}

    await wait_for(holds_only_that_node)


async def test_cluster_forms_and_the_map_reads_it(redis_cluster: LocalCluster) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3 and len(redis_cluster.nodes) == 6
    cluster_map = ClusterMap(redis_cluster.url)
    await cluster_map.refresh()
    assert cluster_map.masters == {m.address for m in masters}
    assert len(cluster_map.known) == 6  # replicas too, to ask when masters are gone
    for key in (b"ticker:nifty:{NIFTY}:options", b"ticker:nifty:{BANKNIFTY}:ticks:history", b"plain"):
        assert key_slot(key) == masters[0].call("CLUSTER", "KEYSLOT", key)
        assert cluster_map.master_for(key) == redis_cluster.master_for(key).address


async def test_cluster_map_falls_back_to_other_nodes(redis_cluster: LocalCluster) -> None:
    dead = ClusterMap("redis://127.0.0.1:1", timeout=1.0)
    with pytest.raises(ConnectionError):
        await dead.refresh()
    cluster_map = ClusterMap(redis_cluster.url)
    await cluster_map.refresh(ask_first=("127.0.0.1", 1))  # a node that went away is asked first
    assert ("127.0.0.1", 1) not in cluster_map.known
    assert len(cluster_map.masters) == 3


async def test_spublish_reaches_subscribers_on_every_master(redis_cluster: LocalCluster) -> None:
    channels = [channel_on(redis_cluster, m.port) for m in redis_cluster.masters()]
    async with ShardSubscriber(redis_cluster.url, channels) as sub:
        assert await sub.ready(GENEROUS)
        assert sub.connected == {m.address for m in redis_cluster.masters()}
        client = RedisCluster.from_url(redis_cluster.url)
        try:
            for channel in channels:
                assert await client.execute_command("SPUBLISH", channel, b"hello " + channel) == 1
        finally:
            await client.aclose()
        got = [await sub.get_message(timeout=GENEROUS) for _ in channels]
    assert sorted(got) == sorted((c, b"hello " + c) for c in channels)  # type: ignore[type-var]


async def test_killed_master_is_replaced_and_the_subscriber_carries_on(redis_cluster: LocalCluster) -> None:
    master = redis_cluster.masters()[0]
    channel = channel_on(redis_cluster, master.port)
    elsewhere = channel_on(redis_cluster, redis_cluster.masters()[1].port)
    publisher, other = ShardPublisher(redis_cluster, channel), ShardPublisher(redis_cluster, elsewhere)
    try:
        async with ShardSubscriber(redis_cluster.url, [channel, elsewhere], health_interval=1.0) as sub:
            assert await sub.ready(GENEROUS)
            publisher.start()
            other.start()
            await events_until(sub, number_at_least(channel, 5))

            killed_at = time.time()
            redis_cluster.kill(master)
            marker = await back_after_a_gap(sub, publisher)
            assert marker.channels == (channel,) and marker.lost_at >= killed_at  # not `elsewhere`: untouched

            successor = await redis_cluster.wait_failover(master)
            assert redis_cluster.master_for(channel) == successor != master
            assert successor.address in sub.connected and master.address not in sub.connected

            redis_cluster.restart(master)
            assert await redis_cluster.wait_rejoined(master) == successor
            await flowing(sub, publisher)
            await flowing(sub, other)
            assert sub.resubscriptions == 1
    finally:
        await publisher.stop()
        await other.stop()
        await redis_cluster.heal()


@contextlib.asynccontextmanager
async def streaming(cluster: LocalCluster, channel: bytes, **options: float
                    ) -> AsyncIterator[tuple[ShardSubscriber, ShardPublisher]]:
    """A subscriber of `channel` and a publisher publishing on it, messages already arriving; at
    the end every node is running again for the next test."""
    publisher = ShardPublisher(cluster, channel)
    try:
        async with ShardSubscriber(cluster.url, [channel], **options) as sub:  # type: ignore[arg-type]
            assert await sub.ready(GENEROUS)
            publisher.start()
            await events_until(sub, number_at_least(channel, 3))
            yield sub, publisher
    finally:
        await publisher.stop()
        await cluster.heal()


async def test_slots_handed_to_the_replica_are_followed(redis_cluster: LocalCluster) -> None:
    """A manual failover moves the slots without breaking a connection: the old master sends
    `sunsubscribe`, and the subscriber follows the channel to its new master."""
    master = redis_cluster.masters()[1]
    channel = channel_on(redis_cluster, master.port)
    replica = next(n for n in redis_cluster.running_nodes()
                   if n.call("INFO", "replication").get("master_port") == master.port)  # type: ignore[union-attr]
    async with streaming(redis_cluster, channel) as (sub, publisher):
        replica.call("CLUSTER", "FAILOVER")
        marker = await back_after_a_gap(sub, publisher)
        assert marker.channels == (channel,)
        await holding_only(sub, replica)  # the demoted master's connection is let go
        assert redis_cluster.master_for(channel) == replica


async def test_a_frozen_master_is_noticed_by_its_silence(redis_cluster: LocalCluster) -> None:
    """A master that stops answering keeps its sockets open: the subscriber's PING goes unanswered,
    it gives the node up and follows the channel to the replica the cluster promotes."""
    master = redis_cluster.masters()[2]
    channel = channel_on(redis_cluster, master.port)
    async with streaming(redis_cluster, channel, timeout=1.0, health_interval=0.5) as (sub, publisher):
        redis_cluster.freeze(master)
        marker = await back_after_a_gap(sub, publisher)
        assert marker.channels == (channel,)
        successor = await redis_cluster.wait_failover(master)
        assert sub.connected == {successor.address}

        redis_cluster.thaw(master)
        assert await redis_cluster.wait_rejoined(master) == successor
        await flowing(sub, publisher)


async def test_a_migrated_slot_is_followed(redis_cluster: LocalCluster) -> None:
    """A slot handed to another master (CLUSTER SETSLOT ... NODE, as a resharding ends): the old
    owner unsubscribes the channel itself, and the subscriber finds it at the new one."""
    source, target = redis_cluster.masters()[:2]
    channel = channel_on(redis_cluster, source.port)
    async with streaming(redis_cluster, channel) as (sub, publisher):
        for node in (target, source):  # the new owner first, as redis-cli's resharding does
            node.call("CLUSTER", "SETSLOT", key_slot(channel), "NODE", target.node_id)
        marker = await back_after_a_gap(sub, publisher)
        assert marker.channels == (channel,)
        await holding_only(sub, target)
