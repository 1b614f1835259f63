"""Process heartbeats in Redis, read by `/health` and `ticker worker --check`.

Each process kind has one hash (instance -> JSON with a timestamp), so reading who is alive is one
HGETALL however large the keyspace is. Instances that stopped beating age out after `TTL_MS` and are
pruned by the reader; the hash itself expires when nobody beats at all.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from ticker.core.contracts import Names

TTL_MS = 15_000


async def beat(redis: Redis, names: Names, process: str, instance: str, info: dict[str, Any] | None = None) -> None:
    doc = {"instance": instance, "ts": time.time(), **(info or {})}
    key = names.heartbeat(process)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, instance, orjson.dumps(doc))
        pipe.pexpire(key, TTL_MS)
        await pipe.execute()


async def alive(redis: Redis, names: Names, process: str, limit: int = 100) -> list[dict[str, Any]]:
    key = names.heartbeat(process)
    cutoff = time.time() - TTL_MS / 1000
    live: list[tuple[bytes, dict[str, Any]]] = []
    stale: list[tuple[bytes, dict[str, Any]]] = []
    for instance, raw in (await redis.hgetall(key)).items():
        doc = orjson.loads(raw)
        (live if doc.get("ts", 0) >= cutoff else stale).append((instance, doc))
    if stale:
        await redis.hdel(key, *(instance for instance, _ in stale))
    return [doc for _, doc in live][:limit]
