"""One expiry's option chain read from what the streamer keeps: the latest tick per token (the
`<prefix>:latest` hash) and the day's opening OI (`<prefix>:oi_open:<day>`), for the options the
instruments table lists for that underlying and expiry.

The listing of an (underlying, expiry) changes once a day at most, so it is cached for a few
seconds (with its fields encoded once); the ticks are read on every call in one round trip down
the app's auto-pipelined connection (two HMGETs, and the chain's daily ATM IVs the streamer keeps,
for `iv_percentile`), and only the ticks new since the last read are parsed. The analytics, and
the rows with each leg's token, tradingsymbol and age in milliseconds, are `ticker.core.chain`'s;
this module only gathers their columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import Any

import asyncpg
import numpy as np
import orjson
from aiohttp import web

from ticker.core.chain import ChainLegs, ChainMarket, LegLabels, chain_document
from ticker.core.clock import IST
from ticker.core.contracts import Names
from ticker.core.greeks import time_to_expiry
from ticker.core.indices import index_symbol
from ticker.http.middleware.errors import ApiError
from ticker.infra.stores.redis import AutoPipeline

LISTING_TTL = 5.0  # seconds an (underlying, expiry) listing is reused
_NUMBERS = ("ltp", "bid", "ask", "volume", "oi", "iv", "delta", "gamma", "theta", "vega")
_TICK_FIELD = {"ltp": "last_price"}


@dataclass(frozen=True)
class Listing:
    """The options of one chain (strike-sorted) and the token of their underlying's spot."""

    underlying: str
    expiry: date
    tokens: list[int]
    symbols: list[str]
    strike: np.ndarray
    is_call: np.ndarray
    spot_token: int | None
    memo: list[Any] = field(default_factory=list, compare=False, repr=False)  # see _leg_values

    def __post_init__(self) -> None:
        self.memo.extend([None] * len(self.tokens))

    @cached_property
    def fields(self) -> list[bytes]:
        """The legs' fields of the latest-tick hash, encoded once."""
        return [b"%d" % t for t in self.tokens]

    @cached_property
    def labels(self) -> LegLabels:
        return LegLabels(self.tokens, self.symbols)


@dataclass(frozen=True)
class Sources:
    """The clients a read goes through (the app's)."""

    db: asyncpg.Pool
    redis: AutoPipeline  # the tick bus, batched (the app's tick_pipe): a chain read is a few large commands
    names: Names


class ChainReader:
    """The app's chain reads; it keeps the listings (per underlying and expiry) for `ttl` seconds."""

    def __init__(self, ttl: float = LISTING_TTL) -> None:
        self.ttl = ttl
        self._listings: dict[tuple[str, date], tuple[float, Listing]] = {}
        self._expiries: dict[str, tuple[float, list[date]]] = {}

    async def expiries(self, src: Sources, underlying: str, today: date) -> list[date]:
        """Listed option expiries of `underlying` from `today` on; 404 naming the underlyings that
        have options when it has none."""
        cached = self._expiries.get(underlying)
        if cached is not None and cached[0] > time.monotonic():
            return [e for e in cached[1] if e >= today]
        rows = await src.db.fetch(
            "SELECT DISTINCT expiry FROM instruments WHERE name = $1 AND instrument_type IN ('CE', 'PE') "
            "AND is_active AND expiry >= $2 ORDER BY expiry", underlying, today)
        found = [r["expiry"] for r in rows]
        if not found:
            raise await _unknown_underlying(src.db, underlying, today)
        self._expiries[underlying] = (time.monotonic() + self.ttl, found)
        return found

    async def listing(self, src: Sources, underlying: str, expiry: date | None, today: date) -> Listing:
        """The chain's options: `expiry`, or the nearest listed one when None; 404 naming the
        listed expiries when `expiry` is not one of them."""
        expiries = await self.expiries(src, underlying, today)
        chosen = expiry or expiries[0]
        if chosen not in expiries:
            shown = [e.isoformat() for e in expiries]
            raise ApiError(404, "not_found", f"{underlying} has no options expiring {chosen.isoformat()}",
                           [{"field": "expiry", "location": "query", "type": "unknown",
                             "message": f"expiries listed: {', '.join(shown)}"}])
        key = (underlying, chosen)
        cached = self._listings.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        listing = await _load(src.db, underlying, chosen)
        self._listings[key] = (time.monotonic() + self.ttl, listing)
        return listing

    async def snapshot(self, src: Sources, underlying: str, expiry: date | None,
                       now: float | None = None) -> dict[str, Any]:
        """The chain as `GET /chain` answers it."""
        now = time.time() if now is None else now
        today = datetime.fromtimestamp(now, IST).date()
        listing = await self.listing(src, underlying, expiry, today)
        ticks, oi_open, spot, days = await _read(src, listing, today)
        return chain_doc(listing, ticks, oi_open, spot, now, _past(days, today))


async def _unknown_underlying(db: asyncpg.Pool, underlying: str, today: date) -> ApiError:
    rows = await db.fetch("SELECT DISTINCT name FROM instruments WHERE instrument_type IN ('CE', 'PE') "
                          "AND is_active AND expiry >= $1 ORDER BY name", today)
    known = [r["name"] for r in rows]
    return ApiError(404, "not_found", f"no options listed for underlying {underlying}",
                    [{"field": "underlying", "location": "query", "type": "unknown",
                      "message": f"underlyings with options: {', '.join(known) or 'none'}"}])


async def _load(db: asyncpg.Pool, underlying: str, expiry: date) -> Listing:
    rows = await db.fetch(
        "SELECT instrument_token, tradingsymbol, strike, instrument_type FROM instruments "
        "WHERE name = $1 AND expiry = $2 AND instrument_type IN ('CE', 'PE') AND is_active "
        "ORDER BY strike, instrument_type", underlying, expiry)
    spot = await db.fetchval(
        "SELECT instrument_token FROM instruments WHERE tradingsymbol = $1 AND is_active "
        "AND (segment = 'INDICES' OR (exchange = 'NSE' AND instrument_type = 'EQ')) "
        "ORDER BY segment = 'INDICES' DESC, instrument_token LIMIT 1", index_symbol(underlying))
    return Listing(underlying, expiry, [r["instrument_token"] for r in rows], [r["tradingsymbol"] for r in rows],
                   np.array([r["strike"] for r in rows], dtype=np.float64),
                   np.array([r["instrument_type"] == "CE" for r in rows], dtype=bool), spot)


async def _read(src: Sources, listing: Listing, today: date) -> tuple[list[Any], list[Any], Any, list[Any]]:
    """Every leg's latest tick, its opening OI, the spot's tick and the chain's daily ATM IVs (as
    HGETALL answers them: field, value, field, value...): one round trip."""
    fields = listing.fields
    spot = [b"%d" % listing.spot_token] if listing.spot_token is not None else []
    latest, oi_open, days = await src.redis.commands(
        ("HMGET", src.names.latest, *fields, *spot), ("HMGET", src.names.oi_open(today.isoformat()), *fields),
        ("HGETALL", src.names.atm_iv(listing.underlying, listing.expiry.isoformat())))
    return latest[:len(fields)], oi_open, latest[len(fields)] if spot else None, days


def _past(days: list[Any], today: date) -> np.ndarray | None:
    """The ATM IVs of the days before today (the streamer's `<prefix>:atm_iv:...` hash, as field,
    value, ...); None when there are none, and `iv_percentile` is then null."""
    mark = today.isoformat()
    past = []
    pairs = days.items() if isinstance(days, dict) else zip(days[::2], days[1::2], strict=True)
    for day, value in pairs:
        day = day.decode() if isinstance(day, bytes) else str(day)
        try:
            iv = float(value)
        except (TypeError, ValueError):
            continue
        if day < mark:
            past.append(iv)
    return np.array(past) if past else None


def chain_doc(listing: Listing, ticks: list[Any], oi_open: list[Any], spot_tick: Any, now: float,
              iv_history: np.ndarray | None = None) -> dict[str, Any]:
    """The snapshot of one chain from its legs' raw ticks (JSON, None where none yet)."""
    table = np.array(_leg_values(listing, ticks), dtype=np.float64).reshape(len(ticks), len(_LEG_FIELDS))
    columns = dict(zip(_NUMBERS, table.T, strict=False))
    opened = np.array([float(v) if v is not None else np.nan for v in oi_open])
    legs = ChainLegs(listing.strike, listing.is_call, oi_open=opened, age=now - table[:, _RECEIVED], **columns)
    model = "bsm" if len(table) and table[-1, _BSM] == 1.0 else "black76"
    market = _market(listing, table[:, _CARRIED], _loads(spot_tick), model, now)
    return chain_document(legs, market, iv_history, listing.labels)


# What is kept of each leg's tick: the numbers, then the price it was priced on, its receipt time
# (epoch seconds) and whether it was priced by bsm (1.0) or not.
_LEG_FIELDS = (*(_TICK_FIELD.get(n, n) for n in _NUMBERS), "underlying_price", "received_at", "model")
_CARRIED, _RECEIVED, _BSM = len(_NUMBERS), len(_NUMBERS) + 1, len(_NUMBERS) + 2
_NO_TICK = (float("nan"),) * len(_LEG_FIELDS)


def _leg_values(listing: Listing, ticks: list[Any]) -> list[tuple[float, ...]]:
    """Each leg's values. A tick the same as last time (a quiet strike) is not parsed again: the
    listing keeps each leg's last raw tick and its values. The new ones are parsed together."""
    memo = listing.memo
    fresh = [i for i, raw in enumerate(ticks) if memo[i] is None or memo[i][0] != raw]
    for i, doc in zip(fresh, _parse_all([ticks[i] for i in fresh]), strict=True):
        memo[i] = (ticks[i], _values(doc))
    return [seen[1] for seen in memo]


def _parse_all(raws: list[bytes | None]) -> list[dict[str, Any] | None]:
    """Ticks parsed (None where absent or not an object), in one call of the parser when every
    one is well-formed: each book cut out first (see `_cut`)."""
    if not raws:
        return []
    try:
        docs = orjson.loads(b"[%b]" % b",".join([_cut(raw) if raw is not None else b"null" for raw in raws]))
    except orjson.JSONDecodeError:  # one bad tick: each on its own, the bad one None
        return [_loads(raw) for raw in raws]
    return [doc if doc.__class__ is dict else None for doc in docs]


def _cut(raw: bytes) -> bytes:
    """The order book cut out when it sits where the streamer renders it (between `depth` and
    `exchange_timestamp`): the chain does not use it, and it is more than half of each tick's bytes
    and objects. A tick laid out otherwise is kept whole."""
    start = raw.find(b',"depth":{')
    end = raw.find(b',"exchange_timestamp":', start) if start >= 0 else -1
    return raw[:start] + raw[end:] if end > start >= 0 else raw


def _values(doc: dict[str, Any] | None) -> tuple[float, ...]:
    if doc is None:
        return _NO_TICK
    nan = float("nan")
    numbers = [v if v.__class__ is float or v.__class__ is int else nan for v in map(doc.get, _LEG_FIELDS[:-2])]
    return (*numbers, _epoch(doc.get("received_at")), 1.0 if doc.get("model") == "bsm" else 0.0)


def _market(listing: Listing, carried: np.ndarray, spot_tick: dict[str, Any] | None, model: str,
            now: float) -> ChainMarket:
    """Spot from the underlying's tick; the price the options were priced on (their
    `underlying_price`: the forward under black76, spot under bsm), the median across legs, as
    each leg carries its own batch's."""
    spot = _number(spot_tick, "last_price") if spot_tick else np.nan
    carried = carried[np.isfinite(carried) & (carried > 0)]
    priced = float(np.median(carried)) if carried.size else None
    forward = priced if model == "black76" else None
    if model == "bsm" and not np.isfinite(spot) and priced is not None:
        spot = priced
    t = float(time_to_expiry(now, np.array([listing.expiry], dtype="datetime64[D]"))[0])
    return ChainMarket(underlying=listing.underlying, expiry=listing.expiry,
                       spot=float(spot) if np.isfinite(spot) else None, forward=forward, t=t,
                       model="bsm" if model == "bsm" else "black76")


def _loads(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _number(doc: dict[str, Any] | None, name: str) -> float:
    value = doc.get(name) if doc else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else np.nan


def _epoch(value: Any) -> float:
    """A tick's `received_at` as epoch seconds: the streamer writes it so; an ISO 8601 time is
    taken too."""
    if value.__class__ is float or value.__class__ is int:
        return float(value)
    if not isinstance(value, str):
        return np.nan
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return np.nan


CHAIN_READER = web.AppKey("chain_reader", ChainReader)
