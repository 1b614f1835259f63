"""NSE contract specifications of the index derivatives, as dated data: one table for our order
intake (lot and freeze checks before an order is queued) and for the Kite stand-in's universe.

Each table row says from when it holds, so the rules of any day are the ones NSE had that day:

- lot sizes go by contract series: a row governs contracts expiring on or after `series_from`
  (NSE changes lots for new series and lets running ones keep theirs);
- freeze quantities (the most one order may carry) go by trading day;
- expiry rules go by contract expiry date.

A date before a name's first row uses that first row: the tables start where their sources do.
Tick sizes and strike steps have not changed over the span of the tables.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from ticker.core.clock import TUESDAY, upcoming_expiries

INDEX_NAMES = ("NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50")

_LOTS_APR_2025 = "NSE F&O circular on lot size revision (April 2025): BANKNIFTY 30->35, MIDCPNIFTY " \
                 "120->140 from the July 2025 series"
_LOTS_OCT_2025 = "NSE circular FAOP70616 (3 Oct 2025): NIFTY 75->65, BANKNIFTY 35->30, FINNIFTY 65->60, " \
                 "MIDCPNIFTY 140->120, NIFTYNXT50 unchanged at 25, from the January 2026 series"
_FREEZE_SEP_2025 = "NSE circular on quantity freeze limits for indices (29 Aug 2025), effective 1 Sep 2025"
_FREEZE_DEC_2025 = "NSE circular on quantity freeze limits for indices (Nov 2025), effective 1 Dec 2025: " \
                   "FINNIFTY 1,800->1,200, BANKNIFTY 600"
_EXPIRY_SEP_2025 = "NSE circular on the expiry day of index derivatives: Tuesday from 1 Sep 2025; only " \
                   "NIFTY keeps weekly contracts"
_CONTRACT_SPECS = "NSE contract specifications for index options (tick size, strike interval)"


@dataclass(frozen=True)
class LotRow:
    name: str
    series_from: date   # first expiry date this lot size governs
    lot_size: int
    source: str


@dataclass(frozen=True)
class FreezeRow:
    name: str
    effective: date     # first trading day this limit applies
    quantity: int       # units per order (not lots)
    source: str


@dataclass(frozen=True)
class ExpiryRow:
    name: str
    effective: date     # contracts expiring on or after this date follow the rule
    weekday: int        # 0 = Monday
    weekly: bool        # weekly contracts besides the monthly (last such weekday of the month)
    source: str


@dataclass(frozen=True)
class StaticSpec:
    name: str
    tick_size: float
    strike_step: float
    source: str


LOT_SIZES: tuple[LotRow, ...] = (
    LotRow("NIFTY", date(2025, 7, 1), 75, _LOTS_APR_2025),
    LotRow("NIFTY", date(2026, 1, 1), 65, _LOTS_OCT_2025),
    LotRow("BANKNIFTY", date(2025, 4, 1), 30, _LOTS_APR_2025),
    LotRow("BANKNIFTY", date(2025, 7, 1), 35, _LOTS_APR_2025),
    LotRow("BANKNIFTY", date(2026, 1, 1), 30, _LOTS_OCT_2025),
    LotRow("FINNIFTY", date(2025, 7, 1), 65, _LOTS_APR_2025),
    LotRow("FINNIFTY", date(2026, 1, 1), 60, _LOTS_OCT_2025),
    LotRow("MIDCPNIFTY", date(2025, 4, 1), 120, _LOTS_APR_2025),
    LotRow("MIDCPNIFTY", date(2025, 7, 1), 140, _LOTS_APR_2025),
    LotRow("MIDCPNIFTY", date(2026, 1, 1), 120, _LOTS_OCT_2025),
    LotRow("NIFTYNXT50", date(2025, 7, 1), 25, _LOTS_OCT_2025),
)

FREEZE_QUANTITIES: tuple[FreezeRow, ...] = (
    FreezeRow("NIFTY", date(2025, 9, 1), 1800, _FREEZE_SEP_2025),
    FreezeRow("BANKNIFTY", date(2025, 9, 1), 900, _FREEZE_SEP_2025),
    FreezeRow("FINNIFTY", date(2025, 9, 1), 1800, _FREEZE_SEP_2025),
    FreezeRow("MIDCPNIFTY", date(2025, 9, 1), 2800, _FREEZE_SEP_2025),
    FreezeRow("NIFTYNXT50", date(2025, 9, 1), 600, _FREEZE_SEP_2025),
    FreezeRow("NIFTY", date(2025, 12, 1), 1800, _FREEZE_DEC_2025),
    FreezeRow("BANKNIFTY", date(2025, 12, 1), 600, _FREEZE_DEC_2025),
    FreezeRow("FINNIFTY", date(2025, 12, 1), 1200, _FREEZE_DEC_2025),
    FreezeRow("MIDCPNIFTY", date(2025, 12, 1), 2800, _FREEZE_DEC_2025),
    FreezeRow("NIFTYNXT50", date(2025, 12, 1), 600, _FREEZE_DEC_2025),
)

EXPIRY_RULES: tuple[ExpiryRow, ...] = (
    ExpiryRow("NIFTY", date(2025, 9, 1), TUESDAY, True, _EXPIRY_SEP_2025),
    ExpiryRow("BANKNIFTY", date(2025, 9, 1), TUESDAY, False, _EXPIRY_SEP_2025),
    ExpiryRow("FINNIFTY", date(2025, 9, 1), TUESDAY, False, _EXPIRY_SEP_2025),
    ExpiryRow("MIDCPNIFTY", date(2025, 9, 1), TUESDAY, False, _EXPIRY_SEP_2025),
    ExpiryRow("NIFTYNXT50", date(2025, 9, 1), TUESDAY, False, _EXPIRY_SEP_2025),
)

STATIC_SPECS: dict[str, StaticSpec] = {s.name: s for s in (
    StaticSpec("NIFTY", 0.05, 50, _CONTRACT_SPECS),
    StaticSpec("BANKNIFTY", 0.05, 100, _CONTRACT_SPECS),
    StaticSpec("FINNIFTY", 0.05, 50, _CONTRACT_SPECS),
    StaticSpec("MIDCPNIFTY", 0.05, 25, _CONTRACT_SPECS),
    StaticSpec("NIFTYNXT50", 0.05, 100, _CONTRACT_SPECS),
)}

Row = TypeVar("Row", LotRow, FreezeRow, ExpiryRow)


def _pick(rows: Iterable[Row], name: str, on: date, key: str) -> Row:
    """The latest row of `name` whose `key` date is on or before `on` (else the earliest row)."""
    mine = sorted((r for r in rows if r.name == name), key=lambda r: getattr(r, key))
    if not mine:
        raise KeyError(f"no NSE specification for {name!r}")
    chosen = mine[0]
    for row in mine:
        if getattr(row, key) <= on:
            chosen = row
    return chosen


def has_spec(name: str) -> bool:
    return name in STATIC_SPECS


def lot_size(name: str, expiry: date) -> int:
    """Lot size of `name`'s contract expiring on `expiry`."""
    return _pick(LOT_SIZES, name, expiry, "series_from").lot_size


def freeze_quantity(name: str, on: date) -> int:
    """The most units one order in `name`'s contracts may carry on trading day `on`."""
    return _pick(FREEZE_QUANTITIES, name, on, "effective").quantity


def max_order_quantity(freeze: int, lot: int) -> int:
    """The largest lot multiple within the freeze quantity (what one order or slice can carry)."""
    return max(lot, freeze // lot * lot) if lot > 0 else freeze


def listed_expiries(name: str, today: date, monthly: int, weekly: int,
                    holidays: Iterable[date] | None = None) -> tuple[list[date], list[date]]:
    """(monthlies, every expiry) of `name` listed on `today`, ascending: the next `monthly` monthly
    dates and, where the rule has weeklies, the next `weekly` weekly dates (a weekly date that is
    also a monthly counts once). An expiry on a holiday moves to the previous trading day (NSE's
    calendar unless `holidays` is given); a rule change takes effect by expiry date."""
    rules = sorted((r for r in EXPIRY_RULES if r.name == name), key=lambda r: r.effective)
    if not rules:
        raise KeyError(f"no NSE expiry rule for {name!r}")
    months: set[date] = set()
    weeks: set[date] = set()
    for i, rule in enumerate(rules):
        start = today if i == 0 else max(today, rule.effective)
        end = rules[i + 1].effective if i + 1 < len(rules) else date.max
        months.update(d for d in upcoming_expiries(start, rule.weekday, monthly, True, holidays) if d < end)
        if rule.weekly:
            weeks.update(d for d in upcoming_expiries(start, rule.weekday, weekly, False, holidays) if d < end)
    month_list = sorted(months)[:monthly]
    return month_list, sorted(set(month_list) | set(sorted(weeks)[:weekly]))


@functools.lru_cache(maxsize=256)  # every order asks; the tables are constants
def order_freeze(name: str, on: date) -> int | None:
    """The freeze quantity of `name`'s derivatives on trading day `on`; None when the table has none."""
    if not any(r.name == name for r in FREEZE_QUANTITIES):
        return None
    return freeze_quantity(name, on)
