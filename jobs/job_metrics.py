"""What the worker's `/metrics` shows about its jobs.

Every registered job function runs inside `observed`, which times it and records how it ended
(complete, retry, failed, cancelled), the Kite error that ended it if any (by Kite's `error_type`),
and its pickup latency (from when it became due, its enqueue for a first run, to its start). Queue
depths and the dead-letter backlog are read when `/metrics` is scraped (`refresh_backlog`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from arq import Retry
from kiteconnect import exceptions as kite_exceptions
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis

from ticker.infra.queue.arq_adapter import job_context, now_ms

JobCoroutine = Callable[..., Awaitable[Any]]

DURATION = Histogram("ticker_job_duration_seconds", "time a job function ran, by function",
                     ["function"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
OUTCOMES = Counter("ticker_job_outcomes_total", "job runs by function and how they ended "
                   "(complete, retry, failed, cancelled)", ["function", "outcome"])
RETRIES = Counter("ticker_job_retries_total", "job runs handed back to the queue to run again, by function",
                  ["function"])
KITE_ERRORS = Counter("ticker_job_kite_errors_total", "job runs ended by a Kite error, by Kite's error_type",
                      ["function", "error_type"])
PICKUP = Histogram("ticker_job_pickup_seconds", "from a job being due (enqueued, or its retry's defer over) "
                   "to a worker starting it, by queue", ["queue"],
                   buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
QUEUE_DEPTH = Gauge("ticker_queue_depth", "jobs in a queue (due, deferred or running)", ["queue"])
DLQ_SIZE = Gauge("ticker_dead_letters_pending", "dead letters not replayed yet")
BACKLOG_TIMEOUT = 2.0


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "complete"
    if isinstance(exc, Retry):
        return "retry"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "failed"


def kite_error_type(exc: BaseException | None) -> str | None:
    """Kite's `error_type` of the Kite error behind `exc` (its cause chain), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kite_exceptions.KiteException):
            # Kite's own name: our subclasses (timeouts, refusals) count under the SDK class they extend
            return next(c.__name__ for c in type(exc).__mro__ if c.__module__ == kite_exceptions.__name__)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def record_end(function: str, seconds: float, exc: BaseException | None) -> None:
    outcome = _outcome(exc)
    DURATION.labels(function).observe(seconds)
    OUTCOMES.labels(function, outcome).inc()
    if outcome == "retry":
        RETRIES.labels(function).inc()
    if (error_type := kite_error_type(exc)) is not None:
        KITE_ERRORS.labels(function, error_type).inc()


def observed(function: str, queue: str, coroutine: JobCoroutine) -> JobCoroutine:
    """`coroutine`, measured."""
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        due = job_context(ctx).due_ms
        if due:
            PICKUP.labels(queue).observe(max(0, now_ms() - due) / 1000)
        started = time.perf_counter()
        try:
            result = await coroutine(ctx, *args, **kwargs)
        except BaseException as exc:
            record_end(function, time.perf_counter() - started, exc)
            raise
        record_end(function, time.perf_counter() - started, None)
        return result

    run.__name__ = getattr(coroutine, "__name__", function)
    return run


async def refresh_backlog(redis: Redis, db: asyncpg.Pool | None, queues: Sequence[str]) -> None:
    """Queue depths and the dead-letter backlog, now; a dependency that does not answer leaves the
    last values (the dependency gauges say which one is down)."""
    try:
        async with asyncio.timeout(BACKLOG_TIMEOUT):
            for queue in queues:
                QUEUE_DEPTH.labels(queue).set(await redis.zcard(queue))
            if db is not None:
                DLQ_SIZE.set(await db.fetchval("SELECT count(*) FROM dead_letters WHERE replayed_job_id IS NULL"))
    except Exception:  # noqa: BLE001 - a scrape must answer even while Redis or Postgres is away
        return
