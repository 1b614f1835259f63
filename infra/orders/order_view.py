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

from ticker.infra.orders.audit_trail import AttemptRecord, OrderRecord, attempts_of_jobs, jobs_for_order


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


def _kite(place: OrderRecord | None) -> KiteView:
    # Postbacks and the sync write Kite's view onto the placing job's row only.
    if place is None:
        return KiteView()
    return KiteView(status=place.kite_status, status_message=place.status_message,
                    filled_quantity=place.filled_quantity, average_price=place.average_price,
                    updated_at=place.kite_updated_at)


async def order_view(db: asyncpg.Pool, order_id: str) -> OrderView | None:
    records = await jobs_for_order(db, order_id)
    if not records:
        return None
    attempts = await attempts_of_jobs(db, [r.job_id for r in records])
    place = next((r for r in records if r.kind == "place"), None)
    first = place or records[0]
    return OrderView(order_id=first.kite_order_id, account_id=first.account_id, kite=_kite(place),
                     jobs=[OrderJobView(**r.model_dump(), attempt_log=attempts[r.job_id]) for r in records])
