"""The arq side shared by every process that enqueues work (web, scheduler, streamer).

Jobs are enqueued by name only (arq's records are written by `arq_adapter`), with JSON-safe dict payloads, onto the queue the job name belongs
to (`Names.queue_for`). A deterministic job id makes an enqueue idempotent: arq refuses a second job
with an id that is queued, running, or still has a stored result.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from pydantic import BaseModel
from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.infra.queue import arq_adapter
from ticker.infra.queue.arq_adapter import ENQUEUE_SCRIPT
from ticker.infra.runtime.settings import Settings

__all__ = ["ENQUEUE_SCRIPT", "create_queue", "derived_job_id", "enqueue", "enqueue_call", "names_for",
           "queue_client", "redis_settings", "unfinished"]


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


def scoped_job_id(names: Names, kind: str, *parts: object) -> str:
    """`derived_job_id` within one deployment: arq's job keys are not namespaced, so two deployments
    (or test runs) on one Redis database would otherwise share ids, and one would get the other's result."""
    return derived_job_id(kind, names.namespace, *parts)


def _body(payload: BaseModel | dict[str, Any]) -> Any:
    return payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload


def enqueue_call(names: Names, job_name: str, payload: BaseModel | dict[str, Any], *, job_id: str,
                 defer_by: float | None = None) -> tuple[list[str], list[Any]]:
    """(keys, args) for ENQUEUE_SCRIPT: the job as arq would store it, on the queue its name routes to."""
    return arq_adapter.enqueue_call(names.queue_for(job_name), job_name, _body(payload), job_id=job_id,
                                    defer_by=defer_by)


async def enqueue(pool: Redis, names: Names, job_name: str, payload: BaseModel | dict[str, Any], *,
                  job_id: str, defer_by: float | None = None) -> bool:
    """Enqueue `job_name(payload)` in one round trip (waking the queue's workers); False when a job
    with this id already exists (a duplicate)."""
    keys, args = enqueue_call(names, job_name, payload, job_id=job_id, defer_by=defer_by)
    return bool(await pool.eval(ENQUEUE_SCRIPT, len(keys), *keys, *args))


enqueue_atomic = enqueue  # the name the hot path's tests know it by


async def unfinished(pool: Redis, names: Names, job_name: str, job_id: str) -> bool:
    """Whether that job is still queued, deferred (e.g. waiting for a retry) or running."""
    view = await arq_adapter.read_view(pool, job_id)
    return view.result is None and (view.job is not None or view.running)
