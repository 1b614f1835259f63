"""Order intake, stage two in the web: the queued audit rows of accepted orders, written in group commits.

Each row is what `ticker.infra.orders.audit_trail.record_queued` writes (the same statement), but the
rows of requests accepted together go to Postgres as one INSERT: one round trip and one commit for the
batch instead of one per order, which is most of what an order acceptance costs Postgres.
"""

from __future__ import annotations

import asyncpg

from ticker.core.gtt import GttJobPlan
from ticker.core.mutual_funds import MfJobPlan
from ticker.core.orders import OrderJobPlan
from ticker.infra.orders.audit_trail import RequestRow, insert_queued
from ticker.infra.orders.coalesce import Coalescer


class AuditBatcher(Coalescer[RequestRow, bool]):
    name = "audit-batch"

    def __init__(self, db: asyncpg.Pool, max_batch: int = 500) -> None:
        # a few commits at once keep several Postgres backends busy; more would only queue for the pool
        super().__init__(max_batch, max_inflight=4)
        self.db = db

    async def record(self, plan: OrderJobPlan | GttJobPlan | MfJobPlan, account_id: str) -> bool:
        """True when this job's row is new; False when it already existed (a repeated submission)."""
        return await self.submit(RequestRow.of(plan, account_id))

    async def run(self, items: list[RequestRow]) -> list[bool]:
        return await insert_queued(self.db, items)
