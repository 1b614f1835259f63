"""The arq side shared by every process that enqueues work (web, scheduler, streamer).

Jobs are enqueued by name only, with JSON-safe dict payloads, onto the queue the job name belongs
to (`Names.queue_for`). A deterministic job id makes an enqueue idempotent: arq refuses a second job
with an id that is queued, running, or still has a stored result.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus
from pydantic import BaseModel

from ticker.core.contracts import Names
from ticker.infra.runtime.settings import Settings


def names_for(settings: Settings) -> Names:
    return Names(settings.publish_channel_prefix, settings.redis_namespace)


def redis_settings(settings: Settings) -> RedisSettings:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    return RedisSettings.from_dsn(settings.redis_url)


async def create_queue(settings: Settings, *, retries: int | None = None) -> ArqRedis:
    """arq's pool. `retries` overrides arq's own connect retries (0: the caller waits out outages)."""
    rs = redis_settings(settings)
    if retries is not None:
        rs.conn_retries = retries
    return await create_pool(rs, default_queue_name=names_for(settings).default_queue)


def queue_client(settings: Settings) -> ArqRedis:
    """The client `create_queue` gives, without connecting first: its first command connects. For a
    process that must start, and answer, while Redis is away (create_queue waits, then fails)."""
    rs = redis_settings(settings)
    client = cast(ArqRedis, ArqRedis.from_url(settings.redis_url, socket_connect_timeout=rs.conn_timeout,
                                              max_connections=rs.max_connections))
    client.default_queue_name = names_for(settings).default_queue
    return client


def derived_job_id(kind: str, *parts: object) -> str:
    """A stable id for the same logical request (idempotency key, history parameters, schedule slot)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]
    return f"{kind}-{digest}"


async def enqueue(
    pool: ArqRedis,
    names: Names,
    job_name: str,
    payload: BaseModel | dict[str, Any],
    *,
    job_id: str,
    defer_by: float | None = None,
) -> bool:
    """Enqueue `job_name(payload)`; False when a job with this id already exists (a duplicate)."""
    body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    job = await pool.enqueue_job(
        job_name, body, _job_id=job_id, _queue_name=names.queue_for(job_name), _defer_by=defer_by
    )
    return job is not None


async def unfinished(pool: ArqRedis, names: Names, job_name: str, job_id: str) -> bool:
    """Whether that job is still queued, deferred (e.g. waiting for a retry) or running."""
    status = await Job(job_id, pool, _queue_name=names.queue_for(job_name)).status()
    return status in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress)


# --- one-round-trip enqueue ---------------------------------------------------------------------
# The same records arq's `enqueue_job` writes (job definition with arq's serializer and expiry, the
# queue entry), checked and written atomically by one script instead of WATCH/EXISTS/MULTI/EXEC:
# one round trip, no connection held across awaits, and it can share a pipeline with other calls.
ENQUEUE_SCRIPT = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


def enqueue_call(names: Names, job_name: str, payload: BaseModel | dict[str, Any], *, job_id: str,
                 defer_by: float | None = None) -> tuple[list[str], list[Any]]:
    """(keys, args) for ENQUEUE_SCRIPT: the job as arq would store it."""
    from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
    from arq.jobs import serialize_job
    from arq.utils import timestamp_ms

    body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    now = timestamp_ms()
    defer_ms = int(round(defer_by * 1000)) if defer_by else 0
    record = serialize_job(job_name, (body,), {}, None, now)
    keys = [job_key_prefix + job_id, result_key_prefix + job_id, names.queue_for(job_name)]
    return keys, [defer_ms + expires_extra_ms, record, now + defer_ms, job_id]


async def enqueue_atomic(pool: ArqRedis, names: Names, job_name: str, payload: BaseModel | dict[str, Any], *,
                         job_id: str, defer_by: float | None = None) -> bool:
    """`enqueue` in one round trip; False when a job with this id already exists."""
    keys, args = enqueue_call(names, job_name, payload, job_id=job_id, defer_by=defer_by)
    return bool(await pool.eval(ENQUEUE_SCRIPT, len(keys), *keys, *args))
