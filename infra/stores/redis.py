"""Redis connection factory (redis-py asyncio with the hiredis parser when installed)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def connect(url: str, *, decode: bool = False, max_connections: int = 64, retries: int = 0) -> Redis:
    """A client with a bounded pool; `health_check_interval` keeps idle pub/sub sockets honest.

    `retries` > 0 retries a command that hit a connection error on a fresh connection: a pooled
    socket outlives a Redis restart, and its first command after one fails although Redis is back.
    Leave it 0 for pub/sub listeners, which must notice a reconnect (messages sent meanwhile are lost).
    """
    return Redis.from_url(
        url,
        decode_responses=decode,
        max_connections=max_connections,
        health_check_interval=15,
        socket_connect_timeout=3,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), retries) if retries else None,
    )
