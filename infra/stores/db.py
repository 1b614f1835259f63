"""asyncpg pool factory (JSON/JSONB columns decode to Python objects with orjson), and the batched
age-based delete every retention job uses."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import orjson


async def _init(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, init=_init)


async def delete_rows_older_than(db: asyncpg.Pool, ages: dict[str, str], cutoff: datetime,
                                 batch: int) -> dict[str, int]:
    """Drop rows older than `cutoff` from each table of `ages` (table -> its timestamp column),
    `batch` rows per statement so no delete holds its locks for long; rows deleted per table.
    Table and column names come from the code, never from a request."""
    deleted = {}
    for table, column in ages.items():
        total = 0
        while True:
            status = await db.execute(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {table} WHERE {column} < $1 LIMIT {int(batch)}))", cutoff)
            n = int(status.split()[-1])
            total += n
            if n < batch:
                break
        deleted[table] = total
    return deleted
