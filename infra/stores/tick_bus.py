"""The tick bus: the Redis the streamer publishes on and every tick reader reads from.

It holds the pub/sub channels (options, underlying, chain, orders), their Streams history and
sequence hash, the latest-tick hash and the opening-OI and ATM-IV hashes. `TICK_REDIS_URL` puts it
on a Redis of its own (fan-out load kept off the queues); unset, it is `REDIS_URL`'s and processes
share one client for both. Queues, leases, limits, heartbeats and the control channel always stay
on `REDIS_URL`.

Every tick-bus client is made here, so the bus can change kind (say, a cluster) in one place.
"""

from __future__ import annotations

from typing import Any, TypeVar

from redis.asyncio import Redis

from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.redis import AutoPipeline, connect

MainClient = TypeVar("MainClient", bound=Redis)


def tick_bus_url(settings: Settings) -> str:
    """Where ticks go: TICK_REDIS_URL, else REDIS_URL (required then)."""
    return settings.tick_redis_url or settings.url("redis_url")


def separate(settings: Settings) -> bool:
    """Whether the tick bus is a different Redis from REDIS_URL's (health reports it on its own)."""
    return tick_bus_url(settings) != settings.redis_url


def connect_tick_bus(settings: Settings, **options: Any) -> Redis:
    """A new client of the tick bus (`options` as `infra.stores.redis.connect` takes them)."""
    return connect(tick_bus_url(settings), **options)


def tick_client(settings: Settings, main: MainClient, **options: Any) -> MainClient | Redis:
    """The tick bus's client for a process that already holds `main` (a client of REDIS_URL):
    `main` itself when the bus is REDIS_URL's, else a new client made with `options`."""
    return connect_tick_bus(settings, **options) if separate(settings) else main


def tick_pipeline(settings: Settings, main: AutoPipeline) -> AutoPipeline:
    """The web's batched reads of the bus (chain snapshots): `main` when the bus is REDIS_URL's."""
    return AutoPipeline(tick_bus_url(settings)) if separate(settings) else main


async def close_tick_client(client: Redis | AutoPipeline, main: Redis | AutoPipeline) -> None:
    """Close what `tick_client` / `tick_pipeline` made (`main` is its owner's to close)."""
    if client is main:
        return
    if isinstance(client, AutoPipeline):
        await client.close()
    else:
        await client.aclose()
