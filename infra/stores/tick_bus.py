"""The tick bus: the Redis the streamer publishes on and every tick reader reads from.

It holds the pub/sub channels (options, underlying, chain, orders), their Streams history and
sequence hash, the latest-tick hash and the opening-OI and ATM-IV hashes. `TICK_REDIS_URL` puts it
on a Redis of its own (fan-out load kept off the queues); unset, it is `REDIS_URL`'s and processes
share one client for both. Queues, leases, limits, heartbeats and the control channel always stay
on `REDIS_URL`.

With TICK_REDIS_CLUSTER the bus is a Redis Cluster and TICK_REDIS_URL one of its nodes: clients
made here are then redis-py's cluster clients, which route each command by its key's slot (the
publisher's fast path and sharded pub/sub have their own: `redis_routes`, `shard_subscriber`).

Every tick-bus client is made here, so the bus changes kind in one place.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from ticker.core.contracts import ORDERS_SHARD, Names
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.redis import AutoPipeline, connect
from ticker.infra.stores.shard_subscriber import Resubscribed, ShardSubscriber

MainClient = TypeVar("MainClient", bound=Redis)


def tick_bus_url(settings: Settings) -> str:
    """Where ticks go: TICK_REDIS_URL, else REDIS_URL (required then)."""
    return settings.tick_redis_url or settings.url("redis_url")


def separate(settings: Settings) -> bool:
    """Whether the tick bus is a different Redis from REDIS_URL's (health reports it on its own)."""
    return settings.tick_redis_cluster or tick_bus_url(settings) != settings.redis_url


def connect_tick_bus(settings: Settings, **options: Any) -> Redis:
    """A new client of the tick bus (`options` as `infra.stores.redis.connect` takes them; a
    cluster client takes its name only)."""
    if settings.tick_redis_cluster:
        cluster = RedisCluster.from_url(tick_bus_url(settings), socket_connect_timeout=3,
                                        client_name=options.get("name"))
        return cluster  # the same commands, routed by slot
    return connect(tick_bus_url(settings), **options)


def tick_client(settings: Settings, main: MainClient, **options: Any) -> MainClient | Redis:
    """The tick bus's client for a process that already holds `main` (a client of REDIS_URL):
    `main` itself when the bus is REDIS_URL's, else a new client made with `options`."""
    return connect_tick_bus(settings, **options) if separate(settings) else main


def tick_pipeline(settings: Settings, main: AutoPipeline) -> AutoPipeline:
    """The web's batched reads of the bus (chain snapshots): `main` when the bus is REDIS_URL's."""
    if settings.tick_redis_cluster:
        return ClusterCommands(connect_tick_bus(settings))  # type: ignore[return-value]
    return AutoPipeline(tick_bus_url(settings)) if separate(settings) else main


class ClusterCommands:
    """`AutoPipeline.command` / `commands` on a cluster: the commands of one call go out together,
    each to the master of its key (a cluster has no one connection to pipeline them on)."""

    def __init__(self, cluster: Redis) -> None:
        self.redis = cluster

    async def command(self, *args: Any) -> Any:
        return await self.redis.execute_command(*args)

    async def commands(self, *calls: tuple[Any, ...]) -> list[Any]:
        return list(await asyncio.gather(*(self.redis.execute_command(*call) for call in calls)))

    async def close(self) -> None:
        await self.redis.aclose()


async def close_tick_client(client: Redis | AutoPipeline, main: Redis | AutoPipeline) -> None:
    """Close what `tick_client` / `tick_pipeline` made (`main` is its owner's to close)."""
    if client is main:
        return
    if isinstance(client, AutoPipeline | ClusterCommands):
        await client.close()
    else:
        await client.aclose()


class BusListener:
    """Every message of one kind of channel (`Names.options`, `.underlying`, `.chain`, `.orders`,
    named by its attribute) on the tick bus, live, for readers that keep no position (`ticker tail`,
    the worker's postback consumer). On a cluster: that channel of every shard the directory names,
    and of those it names later (the directory is subscribed before its members are read)."""

    def __init__(self, settings: Settings, names: Names, kind: str, *, name: str | None = None) -> None:
        self.settings, self.names, self.kind, self.name = settings, names, kind, name
        self.client = connect_tick_bus(settings, name=name)
        self._pubsub: PubSub | None = None
        self._shards: ShardSubscriber | None = None

    async def start(self, timeout: float = 10.0) -> None:
        """Subscribe, and wait until the bus confirms (what is published from then on arrives)."""
        if not self.settings.tick_redis_cluster:
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(getattr(self.names, self.kind))
            return
        if self.kind == "orders":
            self._shards = ShardSubscriber(tick_bus_url(self.settings), [self.names.shard(ORDERS_SHARD).orders],
                                           name=self.name)
            self._shards.start()
        else:
            self._shards = ShardSubscriber(tick_bus_url(self.settings), [self.names.shard_directory], name=self.name)
            self._shards.start()
            await self._shards.subscribed(timeout)
            members = await self.client.smembers(self.names.shards)
            self._shards.add(self._channel(m.decode() if isinstance(m, bytes) else m) for m in members)
        await self._shards.subscribed(timeout)

    async def get(self, timeout: float) -> bytes | None:
        """The next message's data; None after `timeout` seconds without one."""
        if self._pubsub is not None:
            message = await self._pubsub.get_message(timeout=timeout)
            return message["data"] if message is not None and message["type"] == "message" else None
        assert self._shards is not None, "start() first"
        event = await self._shards.get_message(timeout)
        if event is None or isinstance(event, Resubscribed):
            return None
        channel, data = event
        if channel == self.names.shard_directory.encode():
            self._shards.add([self._channel(data.decode())])
            return None
        return data

    def _channel(self, shard: str) -> str:
        return getattr(self.names.shard(shard), self.kind)


    async def close(self) -> None:
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._shards is not None:
            await self._shards.aclose()
        await self.client.aclose()
