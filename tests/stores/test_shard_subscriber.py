"""Sharded pub/sub over a real Redis Cluster (3 masters, 3 replicas): the slot map, SSUBSCRIBE on
each master through `ShardSubscriber`, and its recovery when a channel's master is killed and
replaced, or hands its slots to its replica, while a publisher keeps publishing."""

from __future__ import annotations

import time
import uuid

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.redis_cluster import LocalCluster, ShardPublisher
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
            seen = await events_until(sub, lambda e: isinstance(e, Resubscribed))
            marker = seen[-1]
            assert marker.channels == (channel,) and marker.lost_at >= killed_at
            assert elsewhere not in marker.channels  # its master was never touched
            after = publisher.acked  # published after the subscriber was back
            await events_until(sub, number_at_least(channel, after))

            successor = await redis_cluster.wait_failover(master)
            assert redis_cluster.master_for(channel) == successor != master
            assert successor.address in sub.connected and master.address not in sub.connected

            redis_cluster.restart(master)
            assert await redis_cluster.wait_rejoined(master) == successor
            after = publisher.acked
            await events_until(sub, number_at_least(channel, after))
            after = other.acked
            await events_until(sub, number_at_least(elsewhere, after))
            assert sub.resubscriptions == 1
    finally:
        await publisher.stop()
        await other.stop()
        await redis_cluster.heal()


async def test_slots_handed_to_the_replica_are_followed(redis_cluster: LocalCluster) -> None:
    """A manual failover moves the slots without breaking a connection: the old master sends
    `sunsubscribe`, and the subscriber follows the channel to its new master."""
    master = redis_cluster.masters()[1]
    channel = channel_on(redis_cluster, master.port)
    replica = next(n for n in redis_cluster.running_nodes()
                   if n.call("INFO", "replication").get("master_port") == master.port)  # type: ignore[union-attr]
    publisher = ShardPublisher(redis_cluster, channel)
    try:
        async with ShardSubscriber(redis_cluster.url, [channel]) as sub:
            assert await sub.ready(GENEROUS)
            publisher.start()
            await events_until(sub, number_at_least(channel, 3))
            replica.call("CLUSTER", "FAILOVER")
            seen = await events_until(sub, lambda e: isinstance(e, Resubscribed))
            assert seen[-1].channels == (channel,)
            after = publisher.acked
            await events_until(sub, number_at_least(channel, after))

            async def only_the_new_master_is_held() -> bool:  # the demoted master's connection is let go
                return sub.connected == {replica.address}

            await wait_for(only_the_new_master_is_held)
            assert redis_cluster.master_for(channel) == replica
    finally:
        await publisher.stop()
        await redis_cluster.heal()


async def test_a_frozen_master_is_noticed_by_its_silence(redis_cluster: LocalCluster) -> None:
    """A master that stops answering keeps its sockets open: the subscriber's PING goes unanswered,
    it gives the node up and follows the channel to the replica the cluster promotes."""
    master = redis_cluster.masters()[2]
    channel = channel_on(redis_cluster, master.port)
    publisher = ShardPublisher(redis_cluster, channel)
    try:
        async with ShardSubscriber(redis_cluster.url, [channel], timeout=1.0, health_interval=0.5) as sub:
            assert await sub.ready(GENEROUS)
            publisher.start()
            await events_until(sub, number_at_least(channel, 3))
            redis_cluster.freeze(master)
            seen = await events_until(sub, lambda e: isinstance(e, Resubscribed))
            assert seen[-1].channels == (channel,)
            after = publisher.acked
            await events_until(sub, number_at_least(channel, after))
            successor = await redis_cluster.wait_failover(master)
            assert sub.connected == {successor.address}

            redis_cluster.thaw(master)
            assert await redis_cluster.wait_rejoined(master) == successor
            after = publisher.acked
            await events_until(sub, number_at_least(channel, after))
    finally:
        await publisher.stop()
        await redis_cluster.heal()
