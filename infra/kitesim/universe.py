"""The stand-in's instrument universe: indices, their futures and option chains (and, in the
`full` profile, ~200 stock underlyings), kept as numpy columns so 90k rows stay cheap.

The universe is built for one day and follows NSE's rules for that day (core/contract_specs.py): each
contract's lot size by its series, the freeze quantity of the day, strike steps, expiry weekdays,
and expiries moved off NSE trading holidays (core.holidays). Expiries are always upcoming relative
to that day. Exchange tokens come from a hash of the tradingsymbol, so a contract keeps its token
from day to day as Kite's do.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from typing import Literal

import numpy as np

from ticker.core import contract_specs as specs
from ticker.core.clock import IST, TUESDAY, upcoming_expiries
from ticker.core.instruments import (
    CSV_COLUMNS,
    SEG_INDICES,
    SEG_NFO,
    SEG_NSE,
    Instrument,
    future_symbol,
    make_token,
    option_symbol,
)

KIND_UNDERLYING, KIND_FUT, KIND_CE, KIND_PE = 0, 1, 2, 3
OPTION_KINDS: tuple[tuple[Literal["CE", "PE"], int], ...] = (("CE", KIND_CE), ("PE", KIND_PE))
_TYPE_OF_KIND = ("EQ", "FUT", "CE", "PE")
EXPIRY_CLOSE = time(15, 30)
# Synthetic stock underlyings (the `full` profile) have no NSE row: their lots come from the
# universe, and one order may carry this many lots.
STOCK_FREEZE_LOTS = 24


@dataclass(frozen=True)
class Underlying:
    """An index or stock with listed derivatives, and the parameters of its price model."""

    name: str          # derivatives' `name` column (NIFTY)
    symbol: str        # the underlying's own tradingsymbol (NIFTY 50)
    token: int
    spot: float        # reference level the seeded path wanders around
    vol: float         # ATM annual volatility
    skew: float        # d(vol)/d ln(K/F)
    curvature: float   # d2(vol)/d ln(K/F)^2
    strike_step: float
    lot_size: int      # for underlyings without an NSE row in contract_specs (synthetic stocks); else 0
    weekly: int = 0    # weekly expiries listed besides the monthlies (where the expiry rule has them)
    monthly: int = 3
    strikes_each_side: int = 25

    @property
    def is_index(self) -> bool:
        return self.token & 0xFF == SEG_INDICES

    def lot_for(self, expiry: date) -> int:
        """Lot size of this underlying's contract expiring on `expiry`."""
        return specs.lot_size(self.name, expiry) if specs.has_spec(self.name) else self.lot_size

    def freeze_for(self, lot: int, today: date) -> int:
        """The most units one order may carry on `today`."""
        if specs.has_spec(self.name):
            return specs.freeze_quantity(self.name, today)
        return lot * STOCK_FREEZE_LOTS

    def expiries(self, today: date) -> tuple[list[date], list[date]]:
        """(monthlies, every listed expiry) on `today`, ascending."""
        if specs.has_spec(self.name):
            return specs.listed_expiries(self.name, today, self.monthly, self.weekly)
        months = upcoming_expiries(today, TUESDAY, self.monthly, monthly=True)
        return months, months


def _index(name: str, symbol: str, token: int, spot: float, vol: float, skew: float, curvature: float,
           **kw: int) -> Underlying:
    """An index underlying whose strike step (and, by series, lot size) come from NSE's specs."""
    return Underlying(name, symbol, token, spot, vol, skew, curvature, specs.STATIC_SPECS[name].strike_step,
                      0, **kw)


# Real Kite tokens for the indices; price-model parameters are plausible, not market data.
INDICES = (
    _index("NIFTY", "NIFTY 50", 256265, 25_800.0, 0.12, -0.18, 0.60, weekly=3),
    _index("BANKNIFTY", "NIFTY BANK", 260105, 58_500.0, 0.14, -0.20, 0.55),
    _index("FINNIFTY", "NIFTY FIN SERVICE", 257801, 27_300.0, 0.13, -0.18, 0.55, monthly=2),
    _index("MIDCPNIFTY", "NIFTY MID SELECT", 288009, 13_400.0, 0.16, -0.15, 0.50, monthly=2),
)
_FULL_STRIKES = {"NIFTY": 150, "BANKNIFTY": 100, "FINNIFTY": 60, "MIDCPNIFTY": 60}
_FULL_NIFTY_WEEKLIES = 6
_FULL_STOCKS = 200
_STOCK_STRIKES = 35


def expiry_dates(u: Underlying, today: date) -> list[date]:
    """Every expiry of `u` listed on `today` (monthly and weekly), ascending, unique."""
    return u.expiries(today)[1]


def expiry_epoch(d: date) -> float:
    """Epoch seconds of 15:30 IST on an expiry date (where time to expiry runs out)."""
    return datetime.combine(d, EXPIRY_CLOSE, IST).timestamp()


def stock_underlyings(count: int) -> list[Underlying]:
    """Deterministic synthetic stocks for the full profile (NSE equity tokens 1001...)."""
    out = []
    for i in range(count):
        h = _hash_int(f"stock:{i}")
        spot = float(round(100 * math.exp((h % 3500) / 1000.0), 1))  # 100 .. ~3300
        step = _nice_step(spot / 60)
        lot = max(1, int(round(400_000 / spot / 25)) * 25)
        vol = 0.20 + (h >> 12) % 200 / 1000.0
        out.append(Underlying(f"STOCK{i + 1:03d}", f"STOCK{i + 1:03d}", make_token(1001 + i, SEG_NSE),
                              spot, vol, -0.10, 0.40, step, lot, strikes_each_side=_STOCK_STRIKES))
    return out


def _nice_step(x: float) -> float:
    for step in (1, 2.5, 5, 10, 20, 50, 100):
        if x <= step:
            return float(step)
    return 100.0


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass
class _Rows:
    """Column builder."""

    symbol: list[str]
    und: list[int]
    kind: list[int]
    strike: list[float]
    expiry: list[date | None]
    weekly: list[bool]

    def add(self, symbol: str, und: int, kind: int, strike: float, expiry: date | None,
            weekly: bool = False) -> None:
        self.symbol.append(symbol)
        self.und.append(und)
        self.kind.append(kind)
        self.strike.append(strike)
        self.expiry.append(expiry)
        self.weekly.append(weekly)


class Universe:
    """Instrument rows as columns; row i of every array describes one instrument."""

    def __init__(self, underlyings: list[Underlying], today: date,
                 strikes: dict[str, int] | None = None, centers: dict[str, float] | None = None) -> None:
        self.today = today
        self.underlyings = underlyings
        self.by_name = {u.name: i for i, u in enumerate(underlyings)}
        rows = _Rows([], [], [], [], [], [])
        for i, u in enumerate(underlyings):
            each_side = (strikes or {}).get(u.name, u.strikes_each_side)
            _add_underlying(rows, i, u, today, each_side, (centers or {}).get(u.name, u.spot))
        self._columns(rows)

    def _columns(self, rows: _Rows) -> None:
        n = len(rows.symbol)
        self.symbol = np.array(rows.symbol, dtype=object)
        self.und = np.array(rows.und, dtype=np.int64)
        self.kind = np.array(rows.kind, dtype=np.int8)
        self.strike = np.array(rows.strike, dtype=np.float64)
        self.expiry = [e for e in rows.expiry]
        self.expiry_ts = np.array([expiry_epoch(e) if e else np.inf for e in rows.expiry])
        # Lot and freeze quantity (most units per order; 0 = no limit) per contract, looked up
        # once per (underlying, expiry): a full universe has 90k rows but a few hundred contracts.
        specs_of: dict[tuple[int, date | None], tuple[int, int]] = {}
        for key in set(zip(rows.und, rows.expiry, strict=True)):
            u, e = self.underlyings[key[0]], key[1]
            lot = u.lot_for(e) if e else 1
            specs_of[key] = (lot, u.freeze_for(lot, self.today) if e else 0)
        pairs = np.array([specs_of[k] for k in zip(rows.und, rows.expiry, strict=True)], dtype=np.int64)
        self.lot, self.freeze = pairs[:, 0].copy(), pairs[:, 1].copy()
        self.is_index_row = np.array([self.underlyings[u].is_index for u in rows.und]) & (
            self.kind == KIND_UNDERLYING)
        self.tick = np.where(self.is_index_row, 0.0, 0.05)
        self.token = np.empty(n, dtype=np.int64)
        self.exchange_token = np.empty(n, dtype=np.int64)
        self._assign_tokens()
        self.row_of_symbol = {("NSE" if k == KIND_UNDERLYING else "NFO", s): i
                              for i, (s, k) in enumerate(zip(rows.symbol, rows.kind, strict=True))}
        self._order = np.argsort(self.token)
        self._sorted_tokens = self.token[self._order]

    def _assign_tokens(self) -> None:
        """Underlyings keep their fixed tokens; derivatives hash their symbol, probing on collision."""
        used: set[int] = set()
        for i, k in enumerate(self.kind):
            if k == KIND_UNDERLYING:
                tok = self.underlyings[self.und[i]].token
                self.token[i], self.exchange_token[i] = tok, tok >> 8
        for row in sorted(np.flatnonzero(self.kind != KIND_UNDERLYING), key=lambda j: self.symbol[j]):
            et = 30_000 + _hash_int(str(self.symbol[row])) % 8_000_000
            while et in used:
                et += 1
            used.add(et)
            self.exchange_token[row], self.token[row] = et, make_token(et, SEG_NFO)

    def __len__(self) -> int:
        return len(self.token)

    # --- lookups ---------------------------------------------------------------------------------
    def rows_of(self, tokens: np.ndarray | list[int]) -> np.ndarray:
        """Row index per token, -1 where the token is unknown."""
        tokens = np.asarray(tokens, dtype=np.int64)
        pos = np.searchsorted(self._sorted_tokens, tokens)
        pos = np.clip(pos, 0, len(self._sorted_tokens) - 1)
        found = self._sorted_tokens[pos] == tokens
        return np.where(found, self._order[pos], -1)

    def row_of(self, token: int) -> int:
        return int(self.rows_of([token])[0])

    def exchange_of(self, row: int) -> str:
        return "NSE" if self.kind[row] == KIND_UNDERLYING else "NFO"

    def instrument(self, row: int, last_price: float = 0.0) -> Instrument:
        """The dump row for one instrument."""
        u = self.underlyings[self.und[row]]
        kind = int(self.kind[row])
        if kind == KIND_UNDERLYING:
            segment = "INDICES" if u.is_index else "NSE"
            name = u.symbol if u.is_index else u.name
        else:
            segment = "NFO-FUT" if kind == KIND_FUT else "NFO-OPT"
            name = u.name
        return Instrument(
            instrument_token=int(self.token[row]), exchange_token=int(self.exchange_token[row]),
            tradingsymbol=str(self.symbol[row]), name=name, last_price=last_price,
            expiry=self.expiry[row], strike=float(self.strike[row]), tick_size=float(self.tick[row]),
            lot_size=int(self.lot[row]), instrument_type=_TYPE_OF_KIND[kind], segment=segment,
            exchange=self.exchange_of(row),
        )

    def csv(self, exchange: str | None = None, last_prices: np.ndarray | None = None) -> str:
        """Kite's dump for all instruments or one exchange (NSE holds the underlyings, NFO the rest)."""
        lines = [",".join(CSV_COLUMNS)]
        for row in range(len(self)):
            if exchange is None or self.exchange_of(row) == exchange:
                price = float(last_prices[row]) if last_prices is not None else 0.0
                lines.append(",".join(_csv_field(v) for v in self.instrument(row, price).csv_row()))
        return "\n".join(lines) + "\n"


def _csv_field(v: str) -> str:
    return f'"{v}"' if "," in v or '"' in v else v


def _add_underlying(rows: _Rows, i: int, u: Underlying, today: date, each_side: int,
                    center: float) -> None:
    rows.add(u.symbol, i, KIND_UNDERLYING, 0.0, None)
    months, every = u.expiries(today)
    monthlies = set(months)
    for exp in months:
        rows.add(future_symbol(u.name, exp), i, KIND_FUT, 0.0, exp)
    atm = round(center / u.strike_step) * u.strike_step
    strikes = [atm + k * u.strike_step for k in range(-each_side, each_side + 1)
               if atm + k * u.strike_step > 0]
    for exp in every:
        weekly = exp not in monthlies
        for strike in strikes:
            for kind, code in OPTION_KINDS:
                rows.add(option_symbol(u.name, exp, strike, kind, weekly), i, code, strike, exp, weekly)


def profile_underlyings(profile: Literal["small", "full"]) -> list[Underlying]:
    """`small`: four indices. `full`: more NIFTY weeklies and ~200 stocks besides."""
    if profile == "small":
        return list(INDICES)
    indices = [replace(u, weekly=_FULL_NIFTY_WEEKLIES) if u.weekly else u for u in INDICES]
    return indices + stock_underlyings(_FULL_STOCKS)


def build_universe(profile: Literal["small", "full"], today: date,
                   centers: dict[str, float] | None = None) -> Universe:
    """`small`: ATM±25 strikes (~1.3k rows). `full`: deeper chains, ~90k rows. Strikes are centred
    on `centers` (name -> spot), default each underlying's reference level."""
    strikes = None if profile == "small" else _FULL_STRIKES
    return Universe(profile_underlyings(profile), today, strikes=strikes, centers=centers)


def today_ist(now: float | None = None) -> date:
    ts = datetime.now(IST) if now is None else datetime.fromtimestamp(now, IST)
    return ts.date()
