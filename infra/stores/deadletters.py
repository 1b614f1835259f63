"""The dead-letter queue: jobs that failed for good, kept in Postgres with every attempt's error,
listable, and replayable as a new job whose idempotency key derives from the old job's id (the
replay itself goes through the order intake, `ticker.infra.orders.intake.OrderIntake.replay`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from ticker.core.contracts import JOB_PLACE_MF_ORDER, JOB_PLACE_MF_SIP, JOB_PLACE_ORDER
from ticker.core.orders import kite_tag, order_job_id, replay_key
from ticker.infra.queue.enqueue import derived_job_id

_COLUMNS = ("id, job_id, job_name, account_id, payload, reason, errors, attempts, created_at, replayed_job_id,"
            " replayed_at, replay_count")


class DeadLetter(BaseModel):
    id: int
    job_id: str
    job_name: str
    account_id: str | None = None
    payload: dict[str, Any]
    reason: str
    errors: list[dict[str, Any]] = Field(default_factory=list)
    attempts: int = 0
    created_at: datetime
    replayed_job_id: str | None = None
    replayed_at: datetime | None = None
    replay_count: int = 0


class DeadLetterNotFound(LookupError):
    pass


async def add_dead_letter(db: asyncpg.Pool | asyncpg.Connection, *, job_id: str, job_name: str,
                          payload: dict[str, Any], reason: str, errors: list[dict[str, Any]],
                          account_id: str | None = None) -> int:
    """Record a failed job (once per job id; a second write refreshes reason and errors)."""
    return await db.fetchval(
        "INSERT INTO dead_letters (job_id, job_name, account_id, payload, reason, errors, attempts)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (job_id) DO UPDATE SET reason = EXCLUDED.reason, errors = EXCLUDED.errors,"
        " attempts = EXCLUDED.attempts RETURNING id",
        job_id, job_name, account_id, payload, reason, errors, len(errors),
    )


async def list_dead_letters(db: asyncpg.Pool, *, limit: int = 50, offset: int = 0,
                            account_id: str | None = None, pending_only: bool = False) -> list[DeadLetter]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM dead_letters WHERE ($3::text IS NULL OR account_id = $3)"
        " AND (NOT $4 OR replayed_job_id IS NULL) ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
        max(1, limit), max(0, offset), account_id, pending_only,
    )
    return [DeadLetter(**dict(r)) for r in rows]


async def get_dead_letter(db: asyncpg.Pool, ref: int | str) -> DeadLetter | None:
    """By numeric id or by the failed job's id."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        row = await db.fetchrow(f"SELECT {_COLUMNS} FROM dead_letters WHERE id = $1", int(ref))
    else:
        row = await db.fetchrow(f"SELECT {_COLUMNS} FROM dead_letters WHERE job_id = $1", ref)
    return DeadLetter(**dict(row)) if row else None


def replay_payload(letter: DeadLetter, replay_number: int) -> tuple[str, dict[str, Any]]:
    """(new job id, payload). An order replay carries the old tags so an order that did reach Kite
    after all is adopted rather than placed a second time."""
    key = replay_key(letter.job_id, replay_number)
    payload = dict(letter.payload)
    if "idempotency_key" in payload:
        payload["idempotency_key"] = key
    if letter.job_name == JOB_PLACE_ORDER:
        payload["prior_tags"] = [*payload.get("prior_tags", []), kite_tag(letter.job_id)][-20:]
        payload.pop("basket_id", None), payload.pop("leg", None)
        account = (payload.get("order") or {}).get("account_id")
        return order_job_id("place", key, account), payload
    if letter.job_name in (JOB_PLACE_MF_ORDER, JOB_PLACE_MF_SIP):  # an MF place job tags as an order job does
        payload["prior_tags"] = [*payload.get("prior_tags", []), kite_tag(letter.job_id)][-20:]
    for kind in ("modify", "cancel"):
        if kind in payload:
            return order_job_id(kind, key, payload[kind].get("account_id")), payload
    return derived_job_id(f"replay-{letter.job_name}", key), payload


async def mark_replayed(db: asyncpg.Pool, letter_id: int, job_id: str, replay_number: int) -> None:
    await db.execute(
        "UPDATE dead_letters SET replayed_job_id = $2, replayed_at = now(),"
        " replay_count = GREATEST(replay_count, $3) WHERE id = $1", letter_id, job_id, replay_number,
    )
