"""Job progress (chunks done / total) in Redis, readable through the job status."""

from __future__ import annotations

from redis.asyncio import Redis

from ticker.core.contracts import Names

TTL_SECONDS = 86_400


def _key(names: Names, job_id: str) -> str:
    return names.key("progress", job_id)


async def set_progress(redis: Redis, names: Names, job_id: str, done: int, total: int) -> None:
    await redis.hset(_key(names, job_id), mapping={"done": done, "total": total})
    await redis.expire(_key(names, job_id), TTL_SECONDS)


async def get_progress(redis: Redis, names: Names, job_id: str) -> dict[str, int] | None:
    raw = await redis.hgetall(_key(names, job_id))
    if not raw:
        return None
    return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
