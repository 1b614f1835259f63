"""The control channel: how web and jobs tell the streamer that subscriptions, tokens or instruments changed."""

from __future__ import annotations

from redis.asyncio import Redis

from ticker.core.contracts import ControlMessage, Names


async def publish_control(redis: Redis, names: Names, message: ControlMessage) -> int:
    """Returns the number of listeners that received it (0 when no streamer runs; the change is in
    Postgres either way and a streamer picks it up when it starts)."""
    return await redis.publish(names.control, message.model_dump_json())
