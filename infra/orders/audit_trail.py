"""The order audit in Postgres, and the only code that touches its tables: one row per order job
(`order_requests`), one per attempt (`order_attempts`), one per basket (`order_baskets`).

Intake writes the first, queued row (so a job's record exists from the moment it is accepted and
outlives arq's result expiry); order jobs write the lifecycle; the web, the job status and order sync
read it. An attempt row is written *before* Kite is called, so after a crash the next run knows an
order may already exist and looks its tag up before placing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel

from ticker.core.gtt import GttJobPlan
from ticker.core.mutual_funds import MfJobPlan
from ticker.core.orders import BasketPlan, OrderJobPlan, kite_tag
from ticker.infra.stores.db import delete_rows_older_than

TERMINAL_KITE = ("COMPLETE", "REJECTED", "CANCELLED")


class OrderRecord(BaseModel):
    job_id: str
    kind: str
    idempotency_key: str | None = None
    account_id: str
    basket_id: str | None = None
    tag: str | None = None
    payload: dict[str, Any]
    status: str
    kite_order_id: str | None = None
    kite_status: str | None = None
    status_message: str | None = None
    filled_quantity: int | None = None
    average_price: float | None = None
    attempts: int = 0
    last_error: str | None = None
    result: Any = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    kite_updated_at: datetime | None = None


class AttemptRecord(BaseModel):
    attempt: int
    started_at: datetime
    latency_ms: float | None = None
    outcome: str
    error: str | None = None
    kite_order_id: str | None = None


class BasketRecord(BaseModel):
    basket_id: str
    account_id: str | None = None
    idempotency_key: str | None = None
    leg_job_ids: list[str]
    created_at: datetime


_COLUMNS = ", ".join(OrderRecord.model_fields)


# --- writing the request row ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestRow:
    """The identifying fields of a job's audit row (a plain record: it is built on every order accepted)."""

    job_id: str
    kind: str
    account_id: str
    payload: dict[str, Any]
    tag: str | None = None
    idempotency_key: str | None = None
    basket_id: str | None = None

    @classmethod
    def of(cls, plan: OrderJobPlan | GttJobPlan | MfJobPlan, account_id: str) -> RequestRow:
        return cls(job_id=plan.job_id, kind=plan.kind, account_id=account_id, payload=plan.payload,
                   tag=kite_tag(plan.job_id) if plan.kind == "place" else None,
                   idempotency_key=plan.payload.get("idempotency_key"), basket_id=plan.payload.get("basket_id"))


# Request rows are created by two statements, both here: queued rows, any number at once (an existing
# row is left alone and not returned: a repeated submission), and the start of an attempt below.
_INSERT_QUEUED = """
INSERT INTO order_requests (job_id, kind, idempotency_key, account_id, basket_id, tag, payload)
SELECT job_id, kind, idem, account_id, basket_id, tag, payload::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
    AS r(job_id, kind, idem, account_id, basket_id, tag, payload)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id
"""


def _columns(rows: Sequence[RequestRow]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(7)]
    for row in rows:
        values = (row.job_id, row.kind, row.idempotency_key, row.account_id, row.basket_id, row.tag,
                  orjson.dumps(row.payload).decode())
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


async def insert_queued(db: asyncpg.Pool | asyncpg.Connection, rows: Sequence[RequestRow]) -> list[bool]:
    """The accepted jobs' first rows, in one statement; per row, False when it already existed (a
    repeated submission; the same job twice in `rows`: only the first is new)."""
    inserted = {r["job_id"] for r in await db.fetch(_INSERT_QUEUED, *_columns(rows))}
    out = []
    for row in rows:
        out.append(row.job_id in inserted)
        inserted.discard(row.job_id)
    return out


async def record_queued(db: asyncpg.Pool | asyncpg.Connection, plan: OrderJobPlan, account_id: str) -> bool:
    """The accepted job's first row; False when it already exists (a repeated submission)."""
    return (await insert_queued(db, [RequestRow.of(plan, account_id)]))[0]


async def ensure(db: asyncpg.Pool | asyncpg.Connection, row: RequestRow) -> None:
    """The job's row exists (submitters usually wrote it; a job enqueued directly has none yet)."""
    await insert_queued(db, [row])


async def start_attempt(db: asyncpg.Pool, row: RequestRow) -> int:
    """Count a new attempt, creating the job's row if needed, in one statement (it sits right before
    the call to Kite, so it is one round trip); returns the attempt's number."""
    return await db.fetchval(
        "WITH r AS (INSERT INTO order_requests (job_id, kind, idempotency_key, account_id, basket_id, tag, payload,"
        " status, started_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, 'in_progress', now(), 1)"
        " ON CONFLICT (job_id) DO UPDATE SET attempts = order_requests.attempts + 1, status = 'in_progress',"
        " account_id = EXCLUDED.account_id, payload = EXCLUDED.payload,"
        " started_at = COALESCE(order_requests.started_at, now()), updated_at = now() RETURNING attempts)"
        " INSERT INTO order_attempts (job_id, attempt, started_at, outcome)"
        " SELECT $1, attempts, now(), 'started' FROM r RETURNING attempt",
        row.job_id, row.kind, row.idempotency_key, row.account_id, row.basket_id, row.tag, row.payload,
    )


async def record_basket(db: asyncpg.Pool | asyncpg.Connection, plan: BasketPlan,
                        idempotency_key: str | None) -> bool:
    status = await db.execute(
        "INSERT INTO order_baskets (basket_id, account_id, idempotency_key, leg_job_ids)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (basket_id) DO NOTHING",
        plan.basket_id, plan.account_id, idempotency_key, [leg.job_id for leg in plan.legs],
    )
    return status.endswith(" 1")


async def get_order(db: asyncpg.Pool, job_id: str) -> OrderRecord | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM order_requests WHERE job_id = $1", job_id)
    return OrderRecord(**dict(row)) if row else None


async def get_orders(db: asyncpg.Pool, job_ids: list[str]) -> dict[str, OrderRecord]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM order_requests WHERE job_id = ANY($1::text[])", job_ids)
    return {r["job_id"]: OrderRecord(**dict(r)) for r in rows}


async def find_by_kite_order(db: asyncpg.Pool, kite_order_id: str) -> OrderRecord | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM order_requests WHERE kite_order_id = $1"
                            " ORDER BY created_at LIMIT 1", kite_order_id)
    return OrderRecord(**dict(row)) if row else None


async def attempts_of(db: asyncpg.Pool, job_id: str) -> list[AttemptRecord]:
    rows = await db.fetch("SELECT attempt, started_at, latency_ms, outcome, error, kite_order_id"
                          " FROM order_attempts WHERE job_id = $1 ORDER BY id", job_id)
    return [AttemptRecord(**dict(r)) for r in rows]


async def attempts_of_jobs(db: asyncpg.Pool, job_ids: list[str]) -> dict[str, list[AttemptRecord]]:
    """`attempts_of` for several jobs in one query."""
    rows = await db.fetch("SELECT job_id, attempt, started_at, latency_ms, outcome, error, kite_order_id"
                          " FROM order_attempts WHERE job_id = ANY($1::text[]) ORDER BY id", job_ids)
    out: dict[str, list[AttemptRecord]] = {job_id: [] for job_id in job_ids}
    for r in rows:
        out[r["job_id"]].append(AttemptRecord(**{k: v for k, v in dict(r).items() if k != "job_id"}))
    return out


async def jobs_for_order(db: asyncpg.Pool, order_id: str) -> list[OrderRecord]:
    """The jobs for this Kite order id, or for the order the job with this id placed, oldest first."""
    rows = await db.fetch(
        f"WITH named AS (SELECT COALESCE((SELECT kite_order_id FROM order_requests WHERE job_id = $1), $1) AS id)"
        f" SELECT {_COLUMNS} FROM order_requests, named"
        " WHERE kite_order_id = named.id OR job_id = $1 ORDER BY created_at, job_id", order_id)
    return [OrderRecord(**dict(r)) for r in rows]


async def list_orders(db: asyncpg.Pool, *, limit: int = 50, offset: int = 0, account_id: str | None = None,
                      status: str | None = None, basket_id: str | None = None) -> list[OrderRecord]:
    """Newest first; every filter optional."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM order_requests"
        " WHERE ($3::text IS NULL OR account_id = $3) AND ($4::text IS NULL OR status = $4)"
        " AND ($5::text IS NULL OR basket_id = $5)"
        " ORDER BY created_at DESC, job_id LIMIT $1 OFFSET $2",
        max(1, min(limit, 500)), max(0, offset), account_id, status, basket_id,
    )
    return [OrderRecord(**dict(r)) for r in rows]


async def get_basket(db: asyncpg.Pool, basket_id: str) -> BasketRecord | None:
    row = await db.fetchrow("SELECT basket_id, account_id, idempotency_key, leg_job_ids, created_at"
                            " FROM order_baskets WHERE basket_id = $1", basket_id)
    return BasketRecord(**dict(row)) if row else None


# --- the job's lifecycle ----------------------------------------------------------------------------
async def end_attempt(db: asyncpg.Pool, job_id: str, attempt: int, outcome: str, latency_ms: float, *,
                      error: str | None = None, kite_order_id: str | None = None) -> None:
    await db.execute(
        "UPDATE order_attempts SET outcome = $3, latency_ms = $4, error = $5, kite_order_id = $6"
        " WHERE job_id = $1 AND attempt = $2", job_id, attempt, outcome, latency_ms, error, kite_order_id,
    )


async def retrying(db: asyncpg.Pool, job_id: str, error: str) -> None:
    await db.execute("UPDATE order_requests SET status = 'retrying', last_error = $2, updated_at = now()"
                     " WHERE job_id = $1", job_id, error)


async def complete(db: asyncpg.Pool, job_id: str, attempt: int, outcome: str, latency_ms: float,
                   kite_order_id: str | None, result: dict[str, Any], gtt_id: int | None = None) -> None:
    """The attempt's outcome and the job's result, in one statement (`gtt_id`: a GTT job's trigger)."""
    await db.execute(
        "WITH a AS (UPDATE order_attempts SET outcome = $3, latency_ms = $4, kite_order_id = $5"
        " WHERE job_id = $1 AND attempt = $2)"
        " UPDATE order_requests SET status = 'complete', kite_order_id = COALESCE($5, kite_order_id),"
        # Kite may have reported a status (postback, sync) before the job finished: the result keeps it.
        " result = CASE WHEN kite_status IS NOT NULL AND $6::jsonb->>'kite_status' IS NULL"
        " THEN jsonb_set($6::jsonb, '{kite_status}', to_jsonb(kite_status)) ELSE $6::jsonb END,"
        " gtt_id = COALESCE($7::bigint, gtt_id), finished_at = now(), updated_at = now() WHERE job_id = $1",
        job_id, attempt, outcome, latency_ms, kite_order_id, result, gtt_id,
    )


async def gtt_claimed(db: asyncpg.Pool, gtt_id: int, job_id: str) -> bool:
    """Whether another GTT place job already recorded this trigger as the one it placed."""
    return bool(await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM order_requests WHERE gtt_id = $1 AND kind = 'gtt_place' AND job_id <> $2)",
        gtt_id, job_id))


async def finish_failed(db: asyncpg.Pool | asyncpg.Connection, job_id: str, status: str, error: str) -> None:
    """status: 'dead_letter' or 'failed'."""
    await db.execute("UPDATE order_requests SET status = $2, last_error = $3, finished_at = now(),"
                     " updated_at = now() WHERE job_id = $1", job_id, status, error)


async def count_outcome(db: asyncpg.Pool, job_id: str, outcome: str) -> int:
    return await db.fetchval("SELECT count(*) FROM order_attempts WHERE job_id = $1 AND outcome = $2",
                             job_id, outcome)


async def attempt_errors(db: asyncpg.Pool | asyncpg.Connection, job_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT attempt, started_at, latency_ms, outcome, error FROM order_attempts"
                          " WHERE job_id = $1 ORDER BY id", job_id)
    return [{**dict(r), "started_at": r["started_at"].isoformat()} for r in rows]


async def apply_kite_status(db: asyncpg.Pool, *, kite_order_id: str, tag: str | None, status: str,
                            message: str | None = None, filled_quantity: int | None = None,
                            average_price: float | None = None, at: datetime | None = None) -> int:
    """Bring Kite's view of an order into its audit row (matched by order id, or by our tag when the
    placing job has not recorded the id yet). A terminal status is never overwritten by a live one
    arriving late. Returns the rows updated."""
    return len(await apply_kite_state(db, kite_order_id=kite_order_id, tag=tag, status=status, message=message,
                                       filled_quantity=filled_quantity, average_price=average_price, at=at))


async def apply_kite_state(db: asyncpg.Pool, *, kite_order_id: str, tag: str | None, status: str,
                           message: str | None = None, filled_quantity: int | None = None,
                           average_price: float | None = None, at: datetime | None = None) -> list[tuple[str, bool]]:
    """`apply_kite_status`, answering (account, changed) per row updated: changed when Kite's status or
    filled quantity differs from what the row held. A finished job's result takes the status too, so
    the job's status shows what Kite reports as soon as it reports it."""
    rows = await db.fetch(
        "UPDATE order_requests o SET kite_order_id = COALESCE(o.kite_order_id, $1), kite_status = $3,"
        " status_message = COALESCE($4, o.status_message), filled_quantity = COALESCE($5, o.filled_quantity),"
        " average_price = COALESCE($6, o.average_price), kite_updated_at = COALESCE($7, now()), updated_at = now(),"
        " result = CASE WHEN o.result IS NULL THEN NULL ELSE jsonb_set(o.result, '{kite_status}', to_jsonb($3::text))"
        " END"
        " FROM (SELECT job_id, kite_status, filled_quantity FROM order_requests WHERE kind = 'place'"
        " AND (kite_order_id = $1 OR (kite_order_id IS NULL AND $2::text IS NOT NULL AND tag = $2))"
        " FOR UPDATE) AS before"
        " WHERE o.job_id = before.job_id"
        " AND (o.kite_status IS NULL OR NOT (o.kite_status = ANY($8::text[])) OR $3 = ANY($8::text[]))"
        " RETURNING o.account_id, (before.kite_status IS DISTINCT FROM o.kite_status"
        " OR before.filled_quantity IS DISTINCT FROM o.filled_quantity) AS changed",
        kite_order_id, tag, status, message, filled_quantity, average_price, at, list(TERMINAL_KITE),
    )
    return [(r["account_id"], r["changed"]) for r in rows]


async def open_orders(db: asyncpg.Pool, account_id: str, limit: int = 5000) -> list[str]:
    """Kite order ids of this account's audited orders whose Kite status is not final yet."""
    rows = await db.fetch(
        "SELECT kite_order_id FROM order_requests WHERE account_id = $1 AND kite_order_id IS NOT NULL"
        " AND (kite_status IS NULL OR NOT (kite_status = ANY($2::text[]))) ORDER BY created_at DESC LIMIT $3",
        account_id, list(TERMINAL_KITE), limit,
    )
    return [r["kite_order_id"] for r in rows]


async def accounts_with_open_orders(db: asyncpg.Pool, recent: timedelta) -> list[str]:
    """Accounts with orders placed within `recent` whose Kite status is not final yet."""
    rows = await db.fetch(
        "SELECT DISTINCT account_id FROM order_requests WHERE kind = 'place' AND kite_order_id IS NOT NULL"
        " AND created_at > now() - $2::interval"
        " AND (kite_status IS NULL OR NOT (kite_status = ANY($1::text[]))) ORDER BY account_id",
        list(TERMINAL_KITE), recent,
    )
    return [r["account_id"] for r in rows]


async def cancelled_before_run(db: asyncpg.Pool, job_id: str) -> None:
    """A queued job taken off its queue before a worker started it."""
    await db.execute("UPDATE order_requests SET status = 'cancelled', last_error = 'cancelled before it ran',"
                     " finished_at = now(), updated_at = now() WHERE job_id = $1 AND status = 'queued'", job_id)


# table -> the column that says how old a row is (attempts go with their request row)
_AGE = {"order_requests": "updated_at", "order_baskets": "created_at"}


async def delete_older_than(db: asyncpg.Pool, cutoff: datetime, batch: int) -> dict[str, int]:
    """Drop audit rows older than `cutoff`, `batch` rows per statement."""
    return await delete_rows_older_than(db, _AGE, cutoff, batch)
