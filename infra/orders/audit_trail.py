"""The order audit in Postgres as every process reads it: one row per order job (`order_requests`),
one per attempt (`order_attempts`), one per basket (`order_baskets`).

The job side writes the lifecycle (`ticker.jobs.orders.audit_write`); submitters write the first, queued row here
so a job's record exists from the moment it is accepted and outlives arq's result expiry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel

from ticker.core.orders import BasketPlan, OrderJobPlan, kite_tag

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


async def record_queued(db: asyncpg.Pool | asyncpg.Connection, plan: OrderJobPlan, account_id: str) -> bool:
    """The accepted job's first row; False when it already exists (a repeated submission)."""
    tag = kite_tag(plan.job_id) if plan.kind == "place" else None
    basket_id = plan.payload.get("basket_id")
    status = await db.execute(
        "INSERT INTO order_requests (job_id, kind, idempotency_key, account_id, basket_id, tag, payload)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_id) DO NOTHING",
        plan.job_id, plan.kind, plan.payload.get("idempotency_key"), account_id, basket_id, tag, plan.payload,
    )
    return status.endswith(" 1")


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
