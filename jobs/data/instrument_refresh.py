"""Instrument refresh: Kite's dump into Postgres in one transaction.

The dump goes into a temporary staging table with COPY (Postgres parses the CSV itself; a
Python-side parse of ~100k rows costs more than the whole load), then one upsert writes only rows
that changed, instruments that left the dump or expired are retired, and subscriptions pointing at
retired instruments are deactivated. A transaction-scoped advisory lock serialises concurrent runs,
so a second run at once waits and then finds nothing to change.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, Field, StringConstraints

from ticker.core.contracts import ControlMessage, Names
from ticker.core.instruments import CSV_COLUMNS, InstrumentError
from ticker.infra.kite.account_choice import data_accounts
from ticker.infra.kite.rest import KiteApi
from ticker.infra.queue.control import publish_control
from ticker.jobs.context import Deps, deps

log = logging.getLogger(__name__)

_LOCK_ID = 0x696E7374  # "inst"
_STAGING = "instrument_staging"
# Mirrors the constraints of ticker.core.instruments.Instrument, enforced by Postgres during COPY.
_STAGING_DDL = f"""
CREATE TEMP TABLE {_STAGING} (
    instrument_token BIGINT NOT NULL CHECK (instrument_token >= 0 AND instrument_token < 4294967296),
    exchange_token   BIGINT NOT NULL CHECK (exchange_token >= 0 AND exchange_token < 16777216),
    tradingsymbol    TEXT NOT NULL CHECK (tradingsymbol <> ''),
    name             TEXT,
    last_price       DOUBLE PRECISION,
    expiry           DATE,
    strike           DOUBLE PRECISION CHECK (strike >= 0),
    tick_size        DOUBLE PRECISION CHECK (tick_size >= 0),
    lot_size         INTEGER CHECK (lot_size >= 0),
    instrument_type  TEXT NOT NULL CHECK (instrument_type IN ('EQ', 'FUT', 'CE', 'PE')),
    segment          TEXT NOT NULL,
    exchange         TEXT NOT NULL
) ON COMMIT DROP
"""
_NULLABLE = ["name", "last_price", "expiry", "strike", "tick_size", "lot_size"]
_DATA_COLUMNS = ", ".join(CSV_COLUMNS)
_TARGET_COLUMNS = ", ".join(f"i.{c}" for c in CSV_COLUMNS)

# Only rows whose contents differ (or that come back from retirement) are written, so a
# re-run of the same dump touches nothing.
_UPSERT = f"""
WITH src AS (
    SELECT DISTINCT ON (instrument_token)
        instrument_token, exchange_token, tradingsymbol, COALESCE(name, '') AS name,
        COALESCE(last_price, 0) AS last_price, expiry, COALESCE(strike, 0) AS strike,
        COALESCE(tick_size, 0) AS tick_size, COALESCE(lot_size, 1) AS lot_size,
        instrument_type, segment, exchange
    FROM {_STAGING}
    WHERE expiry IS NULL OR expiry >= $1
    ORDER BY instrument_token
), up AS (
    INSERT INTO instruments AS i ({_DATA_COLUMNS}, is_active, retired_at, updated_at)
    SELECT {_DATA_COLUMNS}, TRUE, NULL, now() FROM src
    ON CONFLICT (instrument_token) DO UPDATE SET
        exchange_token = EXCLUDED.exchange_token, tradingsymbol = EXCLUDED.tradingsymbol,
        name = EXCLUDED.name, last_price = EXCLUDED.last_price, expiry = EXCLUDED.expiry,
        strike = EXCLUDED.strike, tick_size = EXCLUDED.tick_size, lot_size = EXCLUDED.lot_size,
        instrument_type = EXCLUDED.instrument_type, segment = EXCLUDED.segment,
        exchange = EXCLUDED.exchange, is_active = TRUE, retired_at = NULL, updated_at = now()
    WHERE NOT i.is_active
       OR ({_TARGET_COLUMNS}) IS DISTINCT FROM (
            EXCLUDED.instrument_token, EXCLUDED.exchange_token, EXCLUDED.tradingsymbol, EXCLUDED.name,
            EXCLUDED.last_price, EXCLUDED.expiry, EXCLUDED.strike, EXCLUDED.tick_size,
            EXCLUDED.lot_size, EXCLUDED.instrument_type, EXCLUDED.segment, EXCLUDED.exchange)
    RETURNING (xmax = 0) AS inserted
)
SELECT (SELECT count(*) FROM src) AS candidates,
       count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
FROM up
"""

# A live (exchange, tradingsymbol) names one instrument (a unique index says so, and orders are
# looked up by it). Should a dump list one twice, the live listing wins (not expired), then the
# highest token; the other rows leave staging, so they count as missing from the dump.
_DEDUPLICATE = f"""
DELETE FROM {_STAGING} s USING {_STAGING} t
WHERE s.exchange = t.exchange AND s.tradingsymbol = t.tradingsymbol AND s.ctid <> t.ctid
  AND ((t.expiry IS NULL OR t.expiry >= $1), t.instrument_token, t.ctid)
    > ((s.expiry IS NULL OR s.expiry >= $1), s.instrument_token, s.ctid)
"""

# Expired contracts retire everywhere; "missing from the dump" only counts within the exchanges
# the dump covered ($2 NULL = the full dump). A live row whose symbol the dump gives to another
# token retires too. This runs before the upsert, so the unique symbol index never sees two live rows.
_RETIRE = f"""
UPDATE instruments i SET is_active = FALSE, retired_at = now(), updated_at = now()
FROM (
    SELECT instrument_token FROM instruments WHERE is_active AND expiry < $1
    UNION
    SELECT l.instrument_token FROM instruments l
    LEFT JOIN {_STAGING} s ON s.instrument_token = l.instrument_token
    WHERE l.is_active AND s.instrument_token IS NULL AND ($2::text[] IS NULL OR l.exchange = ANY($2::text[]))
    UNION
    SELECT l.instrument_token FROM instruments l
    JOIN {_STAGING} s ON s.exchange = l.exchange AND s.tradingsymbol = l.tradingsymbol
    WHERE l.is_active AND s.instrument_token <> l.instrument_token AND (s.expiry IS NULL OR s.expiry >= $1)
) gone
WHERE i.instrument_token = gone.instrument_token
RETURNING i.instrument_token
"""

_DEACTIVATE = """
UPDATE subscriptions s SET status = 'inactive', updated_at = now(),
    deactivated_reason = CASE WHEN i.expiry < $1 THEN 'instrument expired'
                              ELSE 'instrument no longer listed' END
FROM instruments i
WHERE i.instrument_token = s.instrument_token AND s.status = 'active' AND NOT i.is_active
RETURNING s.instrument_token
"""


class RefreshResult(BaseModel):
    """What one load changed. `rows` counts the dump; `skipped_expired` were in it but already expired."""

    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0
    skipped_expired: int = 0
    duplicates: int = 0  # rows dropped because the dump listed their (exchange, tradingsymbol) again
    deactivated_subscriptions: int = 0
    deactivated_tokens: list[int] = Field(default_factory=list)
    exchanges: list[str] | None = None

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.retired or self.deactivated_subscriptions)


def dump_columns(csv_bytes: bytes) -> list[str]:
    """The header of a dump, checked against Kite's columns (clear error instead of a COPY failure)."""
    first = csv_bytes.split(b"\n", 1)[0].decode("utf-8-sig").strip()
    columns = [c.strip().strip('"') for c in first.split(",")]
    missing = [c for c in CSV_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if missing or unknown:
        detail = "; ".join(filter(None, [
            f"missing columns: {', '.join(missing)}" if missing else "",
            f"unknown columns: {', '.join(unknown)}" if unknown else "",
        ]))
        raise InstrumentError(f"instrument dump header is not Kite's ({detail})")
    return columns


async def load_instruments(
    pool: asyncpg.Pool, csv_bytes: bytes | str, today: date, *, exchanges: list[str] | None = None
) -> RefreshResult:
    """Load a dump (all exchanges, or exactly `exchanges`) and retire what it no longer lists."""
    data = csv_bytes.encode() if isinstance(csv_bytes, str) else bytes(csv_bytes)
    if not data.strip():
        raise InstrumentError("instrument dump is empty; refusing to retire every instrument")
    # COPY reads a trailing blank line as a short row, and wants one line ending throughout.
    newline = data.find(b"\n")
    data = data.rstrip(b"\r\n") + (b"\r\n" if newline > 0 and data[newline - 1] == 13 else b"\n")
    columns = dump_columns(data)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        await conn.execute(_STAGING_DDL)
        rows = await _copy(conn, data, columns)
        if rows == 0:
            raise InstrumentError("instrument dump has a header but no rows; refusing to retire everything")
        await conn.execute(f"ANALYZE {_STAGING}")
        duplicates = int((await conn.execute(_DEDUPLICATE, today)).split()[-1])
        retired = await conn.fetch(_RETIRE, today, exchanges)
        counts = await conn.fetchrow(_UPSERT, today)
        deactivated = [r[0] for r in await conn.fetch(_DEACTIVATE, today)]
    candidates = counts["candidates"]
    return RefreshResult(
        rows=rows, inserted=counts["inserted"], updated=counts["updated"],
        unchanged=candidates - counts["inserted"] - counts["updated"], retired=len(retired),
        skipped_expired=rows - duplicates - candidates, duplicates=duplicates,
        deactivated_subscriptions=len(deactivated),
        deactivated_tokens=sorted(deactivated), exchanges=exchanges,
    )


async def _copy(conn: asyncpg.Connection, data: bytes, columns: list[str]) -> int:
    try:
        status = await conn.copy_to_table(
            _STAGING, source=io.BytesIO(data), columns=columns, format="csv", header=True,
            force_null=[c for c in _NULLABLE if c in columns],
        )
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        # Postgres names the offending line in its CONTEXT ("COPY instrument_staging, line 3: ...").
        where = (exc.context or "").removeprefix(f"COPY {_STAGING}, ").split("\n")[0][:200]
        raise InstrumentError(f"instrument dump rejected at {where or 'an unknown line'}: {exc.message}") from None
    return int(status.split()[-1])


async def publish_refresh(redis: Any, names: Names, result: RefreshResult) -> None:
    """Tell the streamer the instrument set changed, and which subscriptions were switched off."""
    if not result.changed:
        return
    await publish_control(redis, names, ControlMessage(kind="instruments", reason="instrument refresh"))
    if result.deactivated_tokens:
        await publish_control(redis, names, ControlMessage(
            kind="subscriptions", tokens=result.deactivated_tokens, reason="instruments retired"))


# --- the job ---------------------------------------------------------------------------------------
class RefreshInstrumentsPayload(BaseModel, extra="forbid"):
    """No exchanges: the full dump (and anything missing from it retires)."""

    exchanges: list[Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,10}$")]] | None = Field(
        None, min_length=1, max_length=20)


def _dump_of(exchange: str) -> Callable[[KiteApi], Awaitable[bytes]]:
    async def dump(api: KiteApi) -> bytes:
        return await api.instruments(exchange)
    return dump


async def download(d: Deps, exchanges: list[str] | None) -> tuple[bytes, str]:
    """The dump (one exchange's dumps joined under a single header); returns (csv, account used)."""
    picker = data_accounts(d)
    if not exchanges:
        return await picker.call("api", lambda api: api.instruments())
    parts, account = [], ""
    for exchange in exchanges:
        body, account = await picker.call("api", _dump_of(exchange))
        parts.append(bytes(body).rstrip(b"\r\n"))
    header = parts[0].split(b"\n", 1)[0]
    rows = [p.split(b"\n", 1)[1] for p in parts if b"\n" in p]
    return b"\n".join([header, *rows]) + b"\n", account


async def refresh_instruments(ctx: dict[str, Any], payload: dict[str, Any] | None = None) -> dict[str, Any]:
    d = deps(ctx)
    req = RefreshInstrumentsPayload.model_validate(payload or {})
    body, account = await download(d, req.exchanges)
    result = await load_instruments(d.db, body, datetime.now(d.settings.tz).date(), exchanges=req.exchanges)
    await publish_refresh(d.redis, d.names, result)
    log.info("instruments refreshed", extra={"account": account, **result.model_dump(
        include={"rows", "inserted", "updated", "retired", "deactivated_subscriptions"})})
    return result.model_dump(mode="json")


FUNCTIONS = [refresh_instruments]
