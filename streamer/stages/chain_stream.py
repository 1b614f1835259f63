"""The chain stage: each option chain's figures and changed rows, at most every CHAIN_INTERVAL_MS.

It keeps, per instrument table row, the latest value of every leg column a chain needs (taken
from the enriched batch's columns: no Redis read), and which rows ticked since the chain was last
published. When its interval has passed, each chain with a ticked leg is laid out from the
table's flat chain layout and handed to `ticker.core.chain` (vectorised per chain), and goes out
as one JSON object on `<prefix>:chain`:

    {"underlying", "expiry", "full": false, "ts", ...the chain's figures (ChainSummary)...,
     "rows": [{"strike", "gex", "ce": {token, tradingsymbol, ltp, bid, ask, volume, oi,
               oi_change, iv, delta, gamma, theta, vega, age_ms} | null, "pe": ...}, ...]}

with only the strikes one of whose legs ticked in `rows`.

The day's opening OI (for `oi_change`) is the first OI seen per token from 09:15 IST on: Kite's
ticks carry the day's OI high and low but not its open. Each is recorded once a day and written
with HSETNX into `<prefix>:oi_open:<day>` (a restarted streamer keeps the first one written), so
`GET /chain` sees the same open. Each chain's ATM IV is kept per day too, in
`<prefix>:atm_iv:<underlying>:<expiry>` (day -> the last ATM IV published that day): the history
`GET /chain` ranks today's ATM IV against (`iv_percentile`). The stream's own `iv_percentile` stays
null, as the stage reads nothing back from Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, tzinfo
from typing import cast

import numpy as np
import orjson

from ticker.core.chain import ChainLegs, ChainMarket, LegLabels, chain_document
from ticker.core.clock import IST, MARKET_OPEN
from ticker.core.greeks import time_to_expiry
from ticker.streamer.stages.enrich import Enriched, Side
from ticker.streamer.stages.instrument_table import InstrumentTable

# Per-row state kept: the leg columns plus the price the Greeks stood on and the tick's time.
LEG_STATE = ("ltp", "bid", "ask", "volume", "oi", "iv", "delta", "gamma", "theta", "vega")
_STATE = (*LEG_STATE, "underlying_price", "at", "oi_open")
_FROM_COLUMN = {"ltp": "last_price"}
_GREEKS = ("iv", "delta", "gamma", "theta", "vega", "underlying_price")
QUOTE_LENGTH, FULL_LENGTH = 44, 184  # packets carrying volume; also OI and the book
CHAINS_PER_FLUSH = 4  # each costs a few ms for a long chain; the rest wait for the next flush


@dataclass
class ChainOut:
    """What one flush carries for the chains: messages, opening OIs first seen (token -> OI) and
    the ATM IV of each chain published, all of `day`."""

    messages: list[bytes] = field(default_factory=list)
    oi_open: dict[bytes, bytes] = field(default_factory=dict)
    atm_iv: dict[tuple[str, str], float] = field(default_factory=dict)  # (underlying, expiry) -> ATM IV now
    day: str = ""
    shards: list[str] = field(default_factory=list)  # per message, its chain's underlying (a sharded bus's shard)

    @property
    def busy(self) -> bool:
        return bool(self.messages or self.oi_open or self.atm_iv)


class ChainStage:
    def __init__(self, table: InstrumentTable, interval_seconds: float, *, model: str,
                 tz: tzinfo = IST, opens: time = MARKET_OPEN) -> None:
        self.interval = interval_seconds
        self.model = "bsm" if model == "bsm" else "black76"
        self.tz, self.opens = tz, opens
        self._day: date | None = None
        self.table = table
        self.state = _blank(len(table))
        self.ticked = np.zeros(len(table) + 1, bool)
        self.due_at = np.zeros(len(table.chain_start) - 1)  # per chain: when it may go out again
        self.chain_ticked = np.zeros(len(self.due_at), bool)  # per chain: a leg ticked since it went out
        self._layouts: dict[int, ChainLayout] = {}

    def rebind(self, table: InstrumentTable) -> None:
        """A reloaded instrument table: what is known of tokens in both is kept."""
        state, ticked = _blank(len(table)), np.zeros(len(table) + 1, bool)
        rows = table.rows_of(self.table.tokens)
        kept = rows >= 0
        for name, values in self.state.items():
            state[name][rows[kept]] = values[:-1][kept]
        ticked[rows[kept]] = self.ticked[:-1][kept]
        self.table, self.state, self.ticked = table, state, ticked
        self.due_at = np.zeros(len(table.chain_start) - 1)  # chain ids are the new table's
        self.chain_ticked = np.zeros(len(self.due_at), bool)
        chains = table.chain_id[np.flatnonzero(ticked[:-1])]
        self.chain_ticked[chains[chains >= 0]] = True
        self._layouts = {}

    def observe(self, batch: Enriched, now: float) -> ChainOut:
        """Take a batch's values; when the interval is up, what to publish."""
        out = ChainOut()
        self._new_day(now, out)
        if batch.underlying is not None:
            self._prices(batch.underlying, batch.frames)
        if batch.options is not None:
            self._legs(batch.options, batch.frames, now, out)
        out.messages = self._due(now, out)
        return out

    # --- state --------------------------------------------------------------------------------------
    def _new_day(self, now: float, out: ChainOut) -> None:
        day = datetime.fromtimestamp(now, self.tz).date()
        if day != self._day:
            self._day = day
            self.state["oi_open"][:] = np.nan
        out.day = day.isoformat()

    def _prices(self, side: Side, frames: np.ndarray) -> None:
        rows = side.rows
        self.state["ltp"][rows] = np.where(side.ticks.last_price > 0, side.ticks.last_price, np.nan)
        self.state["at"][rows] = frames[side.frame]

    def _legs(self, side: Side, frames: np.ndarray, now: float, out: ChainOut) -> None:
        rows, ticks, columns = side.rows, side.ticks, side.columns
        length = ticks.packet_length
        self._put(rows, "ltp", np.where(ticks.last_price > 0, ticks.last_price, np.nan))
        for name in _GREEKS:
            self._put(rows, name, columns[name])
        self._put(rows, "at", frames[side.frame])
        quoted, full = length >= QUOTE_LENGTH, length >= FULL_LENGTH
        self._put(rows[quoted], "volume", ticks.volume_traded[quoted].astype(np.float64))
        book = {"bid": ticks.depth_buy_price[:, 0], "ask": ticks.depth_sell_price[:, 0]}
        for name, top in book.items():
            self._put(rows[full], name, np.where(top[full] > 0, top[full], np.nan))
        self._put(rows[full], "oi", ticks.oi[full].astype(np.float64))
        self.ticked[rows] = True
        chains = self.table.chain_id[rows[rows >= 0]]
        self.chain_ticked[chains[chains >= 0]] = True
        self._opening(rows[full], ticks.oi[full], now, out)

    def _put(self, rows: np.ndarray, name: str, values: np.ndarray) -> None:
        self.state[name][rows] = values  # a row repeated in a batch keeps its last tick

    def _opening(self, rows: np.ndarray, oi: np.ndarray, now: float, out: ChainOut) -> None:
        """The first OI of the day per row, once the market has opened."""
        if datetime.fromtimestamp(now, self.tz).time() < self.opens:
            return
        first = np.isnan(self.state["oi_open"][rows])
        if not first.any():
            return
        rows, oi = rows[first], oi[first]
        self.state["oi_open"][rows] = oi
        fields = self.table.token_text[rows].tolist()
        out.oi_open.update(zip(fields, (b"%d" % v for v in oi.tolist()), strict=True))

    # --- chains -------------------------------------------------------------------------------------
    def _due(self, now: float, out: ChainOut) -> list[bytes]:
        """The chains that ticked and whose interval is up, the longest waiting first and at most
        CHAINS_PER_FLUSH of them: with many chains the work is spread over the flushes instead of
        stalling one of them every interval."""
        table, ticked = self.table, self.ticked
        chains = np.flatnonzero(self.chain_ticked & (self.due_at <= now))
        chains = chains[np.argsort(self.due_at[chains], kind="stable")][:CHAINS_PER_FLUSH]
        messages = [self._message(c, now, out) for c in chains.tolist()]
        for c in chains.tolist():
            s0, s1 = table.chain_start[c], table.chain_start[c + 1]
            ticked[table.chain_ce[s0:s1]] = False
            ticked[table.chain_pe[s0:s1]] = False
        ticked[-1] = False  # the spare slot, hit by legs not streamed
        self.chain_ticked[chains] = False
        self.due_at[chains] = now + self.interval
        return messages

    def _message(self, chain: int, now: float, out: ChainOut) -> bytes:
        table, state, ticked = self.table, self.state, self.ticked
        s0, s1 = int(table.chain_start[chain]), int(table.chain_start[chain + 1])
        slot_ticked = ticked[table.chain_ce[s0:s1]] | ticked[table.chain_pe[s0:s1]]  # row -1: the spare slot
        layout = self._layout(chain)
        out.shards.append(layout.underlying or "")
        rows = layout.rows
        legs = ChainLegs(layout.strike, layout.is_call, oi_open=state["oi_open"][rows], age=now - state["at"][rows],
                         **{name: state[name][rows] for name in LEG_STATE})
        doc = chain_document(legs, self._market(layout, now), labels=layout.labels)
        changed = set(table.chain_strike[s0:s1][slot_ticked].tolist())
        doc["rows"] = [row for row in cast(list[dict], doc["rows"]) if row["strike"] in changed]
        if doc["atm_iv"] is not None and doc["underlying"] is not None:
            out.atm_iv[(str(doc["underlying"]), str(doc["expiry"]))] = cast(float, doc["atm_iv"])
        return orjson.dumps({**doc, "full": False, "ts": now})

    def _layout(self, chain: int) -> ChainLayout:
        """The chain's rows and labels, laid out once per instrument table."""
        found = self._layouts.get(chain)
        if found is None:
            table = self.table
            s0, s1 = int(table.chain_start[chain]), int(table.chain_start[chain + 1])
            ce, pe = table.chain_ce[s0:s1], table.chain_pe[s0:s1]
            rows = np.concatenate([ce[ce >= 0], pe[pe >= 0]])
            found = ChainLayout(
                rows, table.strike[rows], table.is_call[rows],
                LegLabels(table.tokens[rows].tolist(), [table.symbols[r] for r in rows.tolist()]),
                table.chain_expiry[chain], table.keys[int(rows[0])] if len(rows) else None,
                int(table.spot_row[rows[0]]) if len(rows) else -1)
            self._layouts[chain] = found
        return found

    def _market(self, layout: ChainLayout, now: float) -> ChainMarket:
        state = self.state
        spot = state["ltp"][layout.spot_row] if layout.spot_row >= 0 else np.nan
        carried = state["underlying_price"][layout.rows]
        carried = carried[np.isfinite(carried) & (carried > 0)]
        priced = float(np.median(carried)) if carried.size else None
        t = float(time_to_expiry(now, np.array([layout.expiry]))[0])
        forward = priced if self.model == "black76" else None
        if self.model == "bsm" and not np.isfinite(spot):
            spot = priced if priced is not None else np.nan
        return ChainMarket(underlying=layout.underlying, expiry=layout.expiry.astype(object),
                           spot=float(spot) if np.isfinite(spot) else None, forward=forward, t=t, model=self.model)


@dataclass(frozen=True)
class ChainLayout:
    """One chain's option rows in the instrument table (calls, then puts), what their legs are
    labelled with, its expiry, underlying and the underlying's spot row (-1: none)."""

    rows: np.ndarray
    strike: np.ndarray
    is_call: np.ndarray
    labels: LegLabels
    expiry: np.datetime64
    underlying: str | None
    spot_row: int


def _blank(rows: int) -> dict[str, np.ndarray]:
    """Every state column NaN, one spare slot at the end for row -1 (as in latest_prices)."""
    return {name: np.full(rows + 1, np.nan) for name in _STATE}
