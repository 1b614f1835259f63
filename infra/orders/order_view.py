"""One order as `GET /orders/{order_id}` shows it: Kite's latest view (status, fills, average price,
as postbacks and the order sync brought it into the audit) and our audit trail of every job that
acted on it (place, then modifies and cancels), each with its attempts.

An order is named by its Kite order id, or by the id of the job that placed it (which is all a
client has until Kite has answered).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel

from ticker.infra.orders.audit_trail import AttemptRecord, OrderRecord

_COLUMNS = ", ".join(OrderRecord.model_fields)


class KiteView(BaseModel):
    """What Kite last reported about the order; all None until it reports anything."""

    status: str | None = None
    status_message: str | None = None
    filled_quantity: int | None = None
    average_price: float | None = None
    updated_at: datetime | None = None


class OrderJobView(OrderRecord):
    attempt_log: list[AttemptRecord]


class OrderView(BaseModel):
    order_id: str | None  # Kite's; None while the placing job has not got one
    account_id: str
    kite: KiteView
    jobs: list[OrderJobView]  # oldest first


async def _rows(db: asyncpg.Pool, order_id: str) -> list[asyncpg.Record]:
    """The jobs for this Kite order id, or for the order the job with this id placed."""
    return await db.fetch(
        f"WITH named AS (SELECT COALESCE((SELECT kite_order_id FROM order_requests WHERE job_id = $1), $1) AS id)"
        f" SELECT {_COLUMNS} FROM order_requests, named"
        " WHERE kite_order_id = named.id OR job_id = $1 ORDER BY created_at, job_id", order_id)


async def _attempts(db: asyncpg.Pool, job_ids: list[str]) -> dict[str, list[AttemptRecord]]:
    rows = await db.fetch("SELECT job_id, attempt, started_at, latency_ms, outcome, error, kite_order_id"
                          " FROM order_attempts WHERE job_id = ANY($1::text[]) ORDER BY id", job_ids)
    out: dict[str, list[AttemptRecord]] = {job_id: [] for job_id in job_ids}
    for r in rows:
        out[r["job_id"]].append(AttemptRecord(**{k: v for k, v in dict(r).items() if k != "job_id"}))
    return out


def _kite(place: OrderRecord | None) -> KiteView:
    # Postbacks and the sync write Kite's view onto the placing job's row only.
    if place is None:
        return KiteView()
    return KiteView(status=place.kite_status, status_message=place.status_message,
                    filled_quantity=place.filled_quantity, average_price=place.average_price,
                    updated_at=place.kite_updated_at)


async def order_view(db: asyncpg.Pool, order_id: str) -> OrderView | None:
    records = [OrderRecord(**dict(r)) for r in await _rows(db, order_id)]
    if not records:
        return None
    attempts = await _attempts(db, [r.job_id for r in records])
    place = next((r for r in records if r.kind == "place"), None)
    first = place or records[0]
    return OrderView(order_id=first.kite_order_id, account_id=first.account_id, kite=_kite(place),
                     jobs=[OrderJobView(**r.model_dump(), attempt_log=attempts[r.job_id]) for r in records])
