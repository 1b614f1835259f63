"""The queued audit row of each accepted order, written in group commits.

Row for row what `ticker.infra.orders.audit_trail.record_queued` writes (a test holds the two equal), but
the rows of requests accepted together go to Postgres as one INSERT: one round trip and one commit
for the batch instead of one per order, which is most of what an order acceptance costs Postgres.
"""

from __future__ import annotations

import asyncpg
import orjson

from ticker.core.orders import OrderJobPlan, kite_tag
from ticker.http.coalesce import Coalescer

_INSERT = """
INSERT INTO order_requests (job_id, kind, idempotency_key, account_id, basket_id, tag, payload)
SELECT job_id, kind, idem, account_id, basket_id, tag, payload::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
    AS r(job_id, kind, idem, account_id, basket_id, tag, payload)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id
"""

Row = tuple[OrderJobPlan, str]


class AuditBatcher(Coalescer[Row, bool]):
    name = "audit-batch"

    def __init__(self, db: asyncpg.Pool, max_batch: int = 500) -> None:
        # a few commits at once keep several Postgres backends busy; more would only queue for the pool
        super().__init__(max_batch, max_inflight=4)
        self.db = db

    async def record(self, plan: OrderJobPlan, account_id: str) -> bool:
        """True when this job's row is new; False when it already existed (a repeated submission)."""
        return await self.submit((plan, account_id))

    async def run(self, items: list[Row]) -> list[bool]:
        columns: list[list] = [[] for _ in range(7)]
        for plan, account_id in items:
            values = (plan.job_id, plan.kind, plan.payload.get("idempotency_key"), account_id,
                      plan.payload.get("basket_id"), kite_tag(plan.job_id) if plan.kind == "place" else None,
                      orjson.dumps(plan.payload).decode())
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        inserted = {r["job_id"] for r in await self.db.fetch(_INSERT, *columns)}
        out = []
        for plan, _ in items:  # the same job twice in one batch: only the first is new
            out.append(plan.job_id in inserted)
            inserted.discard(plan.job_id)
        return out
