"""A job's status by id, for GET /jobs/{id} and GET /baskets/{id}.

Read from arq's records (through `arq_adapter`: job definition, in-progress marker, result) and, for order jobs, from the
Postgres audit and the dead-letter table, so an order's outcome outlives arq's result expiry.
Progress (chunks done/total) comes from `ticker.infra.queue.progress`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.infra.orders.audit_trail import OrderRecord, cancelled_before_run, get_basket, get_orders
from ticker.infra.queue.arq_adapter import ArqView, cancel_unstarted, datetime_ms, finished_channel, read_view
from ticker.infra.queue.progress import get_progress

Status = Literal["queued", "in_progress", "complete", "failed", "dead_letter", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"complete", "failed", "dead_letter", "cancelled"})
_AUDIT_STATUS: dict[str, Status] = {
    "queued": "queued", "in_progress": "in_progress", "retrying": "queued", "complete": "complete",
    "failed": "failed", "dead_letter": "dead_letter", "cancelled": "cancelled",
}


class JobStatus(BaseModel):
    job_id: str
    function: str | None = None
    status: Status
    attempts: int = 0
    progress: dict[str, int] | None = None
    result: Any = None
    error: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class BasketStatus(BaseModel):
    basket_id: str
    account_id: str | None = None
    status: Literal["queued", "in_progress", "complete", "partial", "failed", "unknown"]
    counts: dict[str, int] = Field(default_factory=dict)
    legs: list[JobStatus]
    created_at: datetime


class JobCancelled(Exception):
    """Stored as the arq result of a job cancelled before it ran, so its id stays taken."""


def _error_text(exc: Any) -> str:
    if isinstance(exc, BaseException):
        return str(exc) or exc.__class__.__name__
    return str(exc)


async def _dead_letter(db: asyncpg.Pool | None, job_id: str) -> asyncpg.Record | None:
    if db is None:
        return None
    return await db.fetchrow("SELECT reason, attempts, created_at FROM dead_letters WHERE job_id = $1", job_id)


def _from_arq(job_id: str, view: ArqView) -> JobStatus | None:
    result, job = view.result, view.job
    if result is not None:
        ok = result.success
        cancelled = isinstance(result.value, JobCancelled)
        status: Status = "complete" if ok else ("cancelled" if cancelled else "failed")
        return JobStatus(
            job_id=job_id, function=result.function or None, status=status, attempts=result.tries,
            result=result.value if ok else None, error=None if ok else _error_text(result.value),
            enqueued_at=datetime_ms(result.enqueued_ms), started_at=datetime_ms(result.started_ms),
            finished_at=datetime_ms(result.finished_ms),
        )
    if job is not None or view.running:
        return JobStatus(job_id=job_id, function=(job.function or None) if job else None,
                         status="in_progress" if view.running else "queued",
                         attempts=max(view.tries, job.tries if job else 0),
                         enqueued_at=datetime_ms(job.enqueued_ms) if job else None)
    return None


def _merge_audit(status: JobStatus | None, record: OrderRecord) -> JobStatus:
    """Orders: the audit row knows attempts (calls to Kite), errors and results beyond arq's expiry."""
    audit_status = _AUDIT_STATUS.get(record.status, "queued")
    if status is None:
        status = JobStatus(job_id=record.job_id, status=audit_status)
    live = status.status in ("queued", "in_progress")
    update: dict[str, Any] = {
        "attempts": record.attempts,
        "function": status.function or f"{record.kind}_order",
        "enqueued_at": status.enqueued_at or record.created_at,
        "started_at": record.started_at or status.started_at,
        "finished_at": status.finished_at or record.finished_at,
    }
    final = audit_status if not live and audit_status in TERMINAL else status.status
    update["status"] = final
    # A retried order that then went through has no error; a waiting one shows its last.
    if final == "complete":
        update["error"] = None
    elif final != "cancelled":
        update["error"] = record.last_error or status.error
    if record.result is not None:
        update["result"] = record.result
    # The audit row and arq's result are read at once; read just as the job completes, the row may
    # be from before its attempt while the result is already there. The result then knows better.
    result = update.get("result", status.result)
    if isinstance(result, dict) and isinstance(result.get("attempts"), int):
        update["attempts"] = max(record.attempts, result["attempts"])
    return status.model_copy(update=update)


async def job_status(arq_redis: Redis, db: asyncpg.Pool | None, names: Names, job_id: str) -> JobStatus | None:
    """The job's state, or None when nothing anywhere knows this id."""
    view, records, letter, progress = await asyncio.gather(
        read_view(arq_redis, job_id),
        get_orders(db, [job_id]) if db is not None else _none(),
        _dead_letter(db, job_id),
        get_progress(arq_redis, names, job_id),
    )
    status = _from_arq(job_id, view)
    if records and job_id in records:
        status = _merge_audit(status, records[job_id])
    if letter is not None and status is not None and status.status not in ("queued", "in_progress"):
        status = status.model_copy(update={"status": "dead_letter", "error": status.error or letter["reason"]})
    elif letter is not None and status is None:
        status = JobStatus(job_id=job_id, status="dead_letter", error=letter["reason"],
                           attempts=letter["attempts"], finished_at=letter["created_at"])
    if status is not None and progress:
        status = status.model_copy(update={"progress": progress})
    return status


async def _none() -> None:
    return None


async def cancel_job(arq_redis: Redis, db: asyncpg.Pool | None, names: Names, job_id: str, *,
                     keep_result_s: float = 86_400) -> bool:
    """Cancel a job that has not started yet; False when it is running, has run, or does not exist.

    A job that already ran once (a retry waiting its turn) is not cancelled: an order may be at Kite.
    The cancelled job leaves a result behind so its id cannot be enqueued again while it is kept.
    """
    queues = (names.orders_queue, names.default_queue)
    if not await cancel_unstarted(arq_redis, job_id, queues, JobCancelled("cancelled before it ran"), keep_result_s):
        return False
    await arq_redis.publish(finished_channel(names), job_id)  # long-polls on it answer now
    if db is not None:
        await cancelled_before_run(db, job_id)
    return True


def _basket_overall(legs: list[JobStatus]) -> str:
    states = {leg.status for leg in legs}
    if not legs:
        return "unknown"
    if states == {"complete"}:
        return "complete"
    if states <= {"queued"}:
        return "queued"
    if states & {"queued", "in_progress"}:
        return "in_progress"
    return "partial" if "complete" in states else "failed"


async def basket_status(arq_redis: Redis, db: asyncpg.Pool, names: Names, basket_id: str) -> BasketStatus | None:
    """Every leg's status and a summary: complete, partial (some legs failed), failed, or still running."""
    basket = await get_basket(db, basket_id)
    if basket is None:
        return None
    found = await asyncio.gather(*(job_status(arq_redis, db, names, j) for j in basket.leg_job_ids))
    legs = [s or JobStatus(job_id=j, status="queued") for j, s in zip(basket.leg_job_ids, found, strict=True)]
    counts: dict[str, int] = {}
    for leg in legs:
        counts[leg.status] = counts.get(leg.status, 0) + 1
    return BasketStatus(basket_id=basket_id, account_id=basket.account_id, status=_basket_overall(legs),
                        counts=counts, legs=legs, created_at=basket.created_at)
