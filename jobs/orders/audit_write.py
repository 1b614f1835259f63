"""The order audit as order jobs write it: the request row's lifecycle and one row per attempt.

An attempt row is written *before* Kite is called, so after a crash the next run knows an order may
already exist and looks its tag up before placing again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ticker.infra.orders.audit_trail import TERMINAL_KITE, OrderRecord

_RETURNING = ("job_id, kind, idempotency_key, account_id, basket_id, tag, payload, status, kite_order_id,"
              " kite_status, status_message, filled_quantity, average_price, attempts, last_error, result,"
              " created_at, updated_at, started_at, finished_at, kite_updated_at")


async def state(db: asyncpg.Pool, job_id: str) -> OrderRecord | None:
    """The job's row as it stands (read only: a job that then waits has written nothing)."""
    row = await db.fetchrow(f"SELECT {_RETURNING} FROM order_requests WHERE job_id = $1", job_id)
    return OrderRecord(**dict(row)) if row else None


async def ensure(db: asyncpg.Pool | asyncpg.Connection, *, job_id: str, kind: str, account_id: str,
                 payload: dict[str, Any], tag: str | None, idempotency_key: str | None,
                 basket_id: str | None) -> None:
    """The job's row exists (submitters usually wrote it; a job enqueued directly has none yet)."""
    await db.execute(
        "INSERT INTO order_requests (job_id, kind, idempotency_key, account_id, basket_id, tag, payload)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_id) DO NOTHING",
        job_id, kind, idempotency_key, account_id, basket_id, tag, payload,
    )


async def start_attempt(db: asyncpg.Pool, *, job_id: str, kind: str, account_id: str, payload: dict[str, Any],
                        tag: str | None, idempotency_key: str | None, basket_id: str | None) -> int:
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
        job_id, kind, idempotency_key, account_id, basket_id, tag, payload,
    )


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
