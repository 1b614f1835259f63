"""What to stream, read from Postgres: active subscriptions validated against the instruments table,
the instruments' metadata, and (optionally) the underlying index or stock of every derivative.

Subscriptions whose instrument is unknown, retired or expired are deactivated (with the reason)
and logged, as the earlier system did on start-up; they are not streamed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Literal

import asyncpg
from pydantic import BaseModel, ValidationError

from ticker.core.indices import SYMBOL_OF_NAME
from ticker.core.instruments import Instrument
from ticker.streamer.control.placement import Mode, Wanted
from ticker.streamer.stages.instrument_table import InstrumentRow, underlying_key

log = logging.getLogger(__name__)
UNDERLYING_MODE: Mode = "full"

_ACTIVE = """
SELECT s.instrument_token, s.requested_mode, s.account_id,
       i.instrument_token IS NOT NULL AS known, COALESCE(i.is_active, false) AS listed, i.expiry
FROM subscriptions s LEFT JOIN instruments i ON i.instrument_token = s.instrument_token
WHERE s.status = 'active'
ORDER BY s.instrument_token
"""
_DEACTIVATE = """
UPDATE subscriptions s SET status = 'inactive', deactivated_reason = r.reason, updated_at = now()
FROM unnest($1::bigint[], $2::text[]) AS r(token, reason)
WHERE s.instrument_token = r.token AND s.status = 'active'
"""
_INSTRUMENTS = "SELECT * FROM instruments WHERE instrument_token = ANY($1::bigint[])"
_SPOTS = """
SELECT * FROM instruments
WHERE is_active AND ((segment = 'INDICES' AND tradingsymbol = ANY($1::text[]))
                     OR (segment = 'NSE' AND instrument_type = 'EQ' AND tradingsymbol = ANY($2::text[])))
"""


_FINGERPRINT = """
SELECT (SELECT count(*) FROM subscriptions WHERE status = 'active') AS active,
       (SELECT coalesce(sum(hashtext(instrument_token::text || requested_mode || coalesce(account_id, ''))::bigint), 0)
          FROM subscriptions WHERE status = 'active') AS digest,
       (SELECT max(updated_at) FROM subscriptions) AS subscriptions_changed,
       (SELECT max(updated_at) FROM instruments) AS instruments_changed
"""


async def demand_fingerprint(pool: asyncpg.Pool, today: date) -> tuple:
    """Cheap summary of everything `load_demand` depends on: when it has not changed, neither has
    the demand (a periodic reload then skips parsing tens of thousands of rows)."""
    row = await pool.fetchrow(_FINGERPRINT)
    return (today, *row.values())


class SubscriptionRow(BaseModel):
    instrument_token: int
    requested_mode: Literal["FULL", "QUOTE", "LTP"]
    account_id: str | None = None
    known: bool
    listed: bool
    expiry: date | None = None

    def problem(self, today: date) -> str | None:
        if not self.known:
            return "unknown instrument"
        if not self.listed:
            return "instrument retired"
        if self.expiry is not None and self.expiry < today:
            return "instrument expired"
        return None


@dataclass
class Demand:
    """Everything one reconcile needs from Postgres."""

    wanted: list[Wanted]
    instruments: list[InstrumentRow]
    deactivated: dict[int, str]


async def load_demand(pool: asyncpg.Pool, today: date, *, underlyings: bool) -> Demand:
    wanted: list[Wanted] = []
    bad: dict[int, str] = {}
    for record in await pool.fetch(_ACTIVE):  # validated one at a time: 27k models never coexist
        row = SubscriptionRow.model_validate(dict(record))
        if reason := row.problem(today):
            bad[row.instrument_token] = reason
        else:
            wanted.append(Wanted(row.instrument_token, row.requested_mode.lower(), row.account_id))  # type: ignore[arg-type]
    if bad:
        await pool.execute(_DEACTIVATE, list(bad), list(bad.values()))
        log.warning("deactivated subscriptions that cannot stream", extra={
            "count": len(bad), "sample": {str(t): r for t, r in list(bad.items())[:10]}})
    instruments = _parse(await pool.fetch(_INSTRUMENTS, [w.token for w in wanted]))
    if len(instruments) < len(wanted):  # rows that failed validation: nothing to publish them with
        usable = {i.instrument_token for i in instruments}
        wanted = [w for w in wanted if w.token in usable]
    if underlyings:
        spots = await _spots(pool, instruments)
        have = {w.token for w in wanted}
        wanted += [Wanted(i.instrument_token, UNDERLYING_MODE) for i in spots if i.instrument_token not in have]
        instruments += [i for i in spots if i.instrument_token not in have]
    return Demand(wanted, instruments, bad)


async def _spots(pool: asyncpg.Pool, instruments: list[InstrumentRow]) -> list[InstrumentRow]:
    """The index or stock each derivative is written on (when listed)."""
    names = sorted({underlying_key(i) for i in instruments if i.instrument_type != "EQ"})
    if not names:
        return []
    indices = [SYMBOL_OF_NAME[n] for n in names if n in SYMBOL_OF_NAME]
    return _parse(await pool.fetch(_SPOTS, indices, names))


def _parse(records: list[asyncpg.Record]) -> list[InstrumentRow]:
    """Each row validated as Kite's `Instrument`, kept as a compact tuple."""
    out = []
    for record in records:
        try:
            out.append(InstrumentRow.of(Instrument.model_validate(dict(record))))
        except ValidationError as exc:
            log.warning("skipped an instrument row the streamer cannot use",
                        extra={"instrument_token": record["instrument_token"], "error": str(exc.errors()[:1])})
    return out
