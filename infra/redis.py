"""Redis connection factory (redis-py asyncio with the hiredis parser when installed)."""

from __future__ import annotations

from redis.asyncio import Redis


def connect(url: str, *, decode: bool = False, max_connections: int = 64) -> Redis:
    """A client with a bounded pool; `health_check_interval` keeps idle pub/sub sockets honest."""
    return Redis.from_url(
        url,
        decode_responses=decode,
        max_connections=max_connections,
        health_check_interval=15,
        socket_connect_timeout=3,
        socket_keepalive=True,
    )
