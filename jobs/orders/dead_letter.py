"""Sending an order job to the dead-letter queue: its payload, every attempt's error and the reason,
written together with the audit row's final status so the two never disagree."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from ticker.infra.orders import audit_trail as audit
from ticker.infra.stores.deadletters import add_dead_letter

log = logging.getLogger(__name__)


async def dead_letter_order(db: asyncpg.Pool, *, job_id: str, job_name: str, payload: dict[str, Any],
                            account_id: str | None, reason: str, row: audit.RequestRow | None = None) -> int:
    """Record the failure for good; returns the dead letter's id. `row` (the audit row's fields, when
    the job got far enough to know them) creates the audit row if the job had none."""
    async with db.acquire() as conn, conn.transaction():
        if row is not None:
            await audit.ensure(conn, row)
        errors = await audit.attempt_errors(conn, job_id)
        letter = await add_dead_letter(conn, job_id=job_id, job_name=job_name, payload=payload, reason=reason,
                                       errors=errors, account_id=account_id)
        await audit.finish_failed(conn, job_id, "dead_letter", reason)
    log.warning("order job %s dead-lettered (%s attempts): %s", job_id, len(errors), reason)
    return letter
