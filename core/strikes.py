"""Which option strikes to stream: ATM ± N strikes for the next K expiries of each underlying.

Pure planning; the rebalancer job reads the chain from Postgres and applies the difference, so a
strike that stays inside the window is never unsubscribed and resubscribed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class ChainRow:
    instrument_token: int
    expiry: date
    strike: float
    instrument_type: str  # CE or PE


@dataclass(frozen=True)
class StrikeWindow:
    expiry: date
    atm: float
    strikes: tuple[float, ...]
    tokens: frozenset[int]


def next_expiries(rows: Iterable[ChainRow], today: date, count: int) -> list[date]:
    return sorted({r.expiry for r in rows if r.expiry >= today})[:count]


def atm_strike(strikes: Sequence[float], spot: float) -> float:
    """The listed strike closest to spot (ties go to the lower strike)."""
    if not strikes:
        raise ValueError("no strikes listed")
    i = bisect.bisect_left(strikes, spot)
    candidates = strikes[max(0, i - 1): i + 1]
    return min(candidates, key=lambda k: (abs(k - spot), k))


def window(rows: Sequence[ChainRow], expiry: date, spot: float, levels: int) -> StrikeWindow:
    """ATM ± `levels` listed strikes of one expiry, calls and puts."""
    of_expiry = [r for r in rows if r.expiry == expiry and r.instrument_type in ("CE", "PE")]
    strikes = sorted({r.strike for r in of_expiry})
    atm = atm_strike(strikes, spot)
    i = strikes.index(atm)
    chosen = tuple(strikes[max(0, i - levels): i + levels + 1])
    keep = set(chosen)
    tokens = frozenset(r.instrument_token for r in of_expiry if r.strike in keep)
    return StrikeWindow(expiry, atm, chosen, tokens)


def plan(rows: Sequence[ChainRow], spot: float, today: date, levels: int, expiries: int) -> list[StrikeWindow]:
    return [window(rows, e, spot, levels) for e in next_expiries(rows, today, expiries)]


@dataclass(frozen=True)
class Diff:
    add: frozenset[int]
    remove: frozenset[int]
    keep: frozenset[int]


def diff(current: Iterable[int], desired: Iterable[int]) -> Diff:
    cur, want = set(current), set(desired)
    return Diff(frozenset(want - cur), frozenset(cur - want), frozenset(cur & want))
