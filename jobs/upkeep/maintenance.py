"""`cleanup`: drop what is older than CLEANUP_DAYS — order audit rows (attempts go with them),
baskets, dead letters, and cached history — in small batches so no delete holds locks for long."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from ticker.infra.orders.audit_trail import delete_older_than as delete_audit_older_than
from ticker.infra.stores.db import delete_rows_older_than
from ticker.jobs.context import deps

log = logging.getLogger(__name__)
BATCH = 5_000

# table -> the timestamp column that says how old a row is (the order audit deletes its own rows)
_TABLES = {
    "dead_letters": "created_at",
    "history_cache": "fetched_at",
}


class CleanupPayload(BaseModel, extra="forbid"):
    days: int | None = Field(None, gt=0, le=3650)


class CleanupResult(BaseModel):
    cutoff: datetime
    deleted: dict[str, int]


async def delete_older_than(pool: asyncpg.Pool, cutoff: datetime) -> dict[str, int]:
    deleted = await delete_audit_older_than(pool, cutoff, BATCH)
    return deleted | await delete_rows_older_than(pool, _TABLES, cutoff, BATCH)


async def cleanup(ctx: dict[str, Any], payload: dict[str, Any] | None = None) -> dict[str, Any]:
    d = deps(ctx)
    req = CleanupPayload.model_validate(payload or {})
    cutoff = datetime.now(UTC) - timedelta(days=req.days or d.settings.cleanup_days)
    deleted = await delete_older_than(d.db, cutoff)
    log.info("old records deleted", extra={"cutoff": cutoff.isoformat(), **deleted})
    return CleanupResult(cutoff=cutoff, deleted=deleted).model_dump(mode="json")


FUNCTIONS = [cleanup]
