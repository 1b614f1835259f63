"""`ticker tail --chain`: one option chain as a ladder (calls | strike | puts), kept from the stream.

The chain channel carries, per chain and interval, the chain's figures and only the strikes one of
whose legs ticked; the board keeps the latest row per strike, bounded by the strikes the
instruments table lists for the chain, so the ladder is whole once every strike has ticked. Before
the first message it says it is waiting rather than guessing.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from ticker.core.chain import ChainLegQuote, ChainSnapshot, ChainStrike, ChainSummary
from ticker.core.tick_envelope import unwrap
from ticker.infra.cli.oneshot import CliFailure

REVERSE, RESET = "\x1b[7m", "\x1b[0m"
LEG = ("ltp", "oi", "iv%", "delta")
CELL = 10


class ChainListing:
    """What the instruments table lists for one chain: its expiry and strikes."""

    def __init__(self, underlying: str, expiry: date, strikes: list[float]) -> None:
        self.underlying, self.expiry, self.strikes = underlying, expiry, strikes


async def chain_listing(db: asyncpg.Pool, underlying: str, expiry: date | None, today: date) -> ChainListing:
    """The chain to show: `expiry`, or the nearest listed from `today` on. A CliFailure naming
    what is listed when the underlying has no options or not that expiry."""
    rows = await db.fetch(
        "SELECT DISTINCT expiry FROM instruments WHERE name = $1 AND instrument_type IN ('CE', 'PE') "
        "AND is_active AND expiry >= $2 ORDER BY expiry", underlying, today)
    expiries = [r["expiry"] for r in rows]
    if not expiries:
        raise CliFailure(f"{underlying} has no listed options (names are as Kite spells them, e.g. NIFTY)")
    chosen = expiry or expiries[0]
    if chosen not in expiries:
        listed = ", ".join(e.isoformat() for e in expiries[:8])
        raise CliFailure(f"{underlying} has no options expiring {chosen.isoformat()} (listed: {listed})")
    strikes = await db.fetch(
        "SELECT DISTINCT strike FROM instruments WHERE name = $1 AND expiry = $2 "
        "AND instrument_type IN ('CE', 'PE') AND is_active ORDER BY strike", underlying, chosen)
    return ChainListing(underlying, chosen, [float(r["strike"]) for r in strikes])


class ChainBoard:
    """The latest figures and row per strike of one chain, from the chain channel's messages."""

    def __init__(self, listing: ChainListing, rows: int) -> None:
        self.listing = listing
        self.rows = rows
        self.listed = set(listing.strikes)
        self.summary: ChainSummary | None = None
        self.ts: float | None = None
        self.latest: dict[float, ChainStrike] = {}
        self.received = 0

    def add(self, payload: bytes) -> bool:
        """Take one message (an envelope of chains, or one chain); False when none is this chain."""
        try:
            chains, _ = unwrap(orjson.loads(payload))
        except (orjson.JSONDecodeError, ValueError):
            return False
        return any([self._take(raw) for raw in chains])  # a list: every chain is looked at

    def _take(self, raw: Any) -> bool:
        try:
            doc = ChainSnapshot.model_validate(raw)
        except ValidationError:
            return False
        if doc.underlying != self.listing.underlying or doc.expiry != self.listing.expiry:
            return False
        self.received += 1
        self.summary = ChainSummary.model_validate(doc.model_dump(exclude={"rows"}))
        ts = raw.get("ts") if isinstance(raw, dict) else None
        self.ts = float(ts) if isinstance(ts, int | float) else time.time()
        for row in doc.rows:
            if row.strike in self.listed:  # bounded by the listing, whatever arrives
                self.latest[row.strike] = row
        return True

    def render(self, channel: str, *, ansi: bool, now: float | None = None) -> str:
        now = time.time() if now is None else now
        lines = [self._header(channel, now)]
        if self.summary is None:
            lines.append(f"waiting for the first update on {channel} ...")
            return "\n".join(lines)
        calls = "".join(f"{c:>{CELL}}" for c in reversed(LEG))
        puts = "".join(f"{c:>{CELL}}" for c in LEG)
        lines.append(f"{'CALLS':>{CELL * len(LEG)}} | {'strike':^10} | {'PUTS':<{CELL * len(LEG)}}")
        lines.append(f"{calls} | {'':^10} | {puts}")
        atm = self.summary.atm_strike
        for strike in self._window(atm):
            lines.append(self._row(strike, strike == atm, ansi))
        return "\n".join(lines)

    def _header(self, channel: str, now: float) -> str:
        title = f"{self.listing.underlying} {self.listing.expiry.isoformat()}  ({channel}, messages={self.received})"
        s = self.summary
        if s is None:
            return title
        age = f"{now - self.ts:.1f}s" if self.ts is not None else "-"
        figures = (f"spot {_num(s.spot, '.2f')}  forward {_num(s.forward, '.2f')}  "
                   f"ATM IV {_pct(s.atm_iv)}%  PCR OI {_num(s.pcr_oi, '.2f')}  max pain {_num(s.max_pain, 'g')}  "
                   f"straddle {_num(s.straddle, '.2f')}  age {age}")
        return f"{title}\n{figures}"

    def _window(self, atm: float | None) -> list[float]:
        """At most `rows` strikes, centred on the ATM strike when there is one."""
        strikes = self.listing.strikes
        if len(strikes) <= self.rows:
            return strikes
        centre = min(range(len(strikes)), key=lambda i: abs(strikes[i] - atm)) if atm is not None else 0
        start = max(0, min(centre - self.rows // 2, len(strikes) - self.rows))
        return strikes[start:start + self.rows]

    def _row(self, strike: float, atm: bool, ansi: bool) -> str:
        row = self.latest.get(strike)
        ce = _leg(row.ce if row else None)
        pe = _leg(row.pe if row else None)
        middle = _num(strike, "g")
        middle = f"*{middle}*" if atm and not ansi else middle  # no highlight without a terminal
        text = f"{''.join(f'{c:>{CELL}}' for c in reversed(ce))} |{middle:^12}| {''.join(f'{c:>{CELL}}' for c in pe)}"
        return f"{REVERSE}{text}{RESET}" if atm and ansi else text


def _leg(leg: ChainLegQuote | None) -> list[str]:
    if leg is None:
        return ["-"] * len(LEG)
    return [_num(leg.ltp, ".2f"), _num(leg.oi, "d"), _pct(leg.iv), _num(leg.delta, ".3f")]


def _num(value: float | int | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def _pct(value: float | None) -> str:
    return format(value * 100, ".1f") if value is not None else "-"
