"""One expiry's option chain, laid out by strike, with its analytics: ATM strike and IV, straddle,
put-call ratios, max pain, 25-delta risk reversal and butterfly, gamma exposure, IV percentile.

Pure: the caller gathers the legs (latest tick per option, with IV and Greeks) as numpy columns,
plus the market (spot, forward, OI multiplier); `chain_snapshot` answers the whole chain with its
rows (for `GET /chain`), `chain_summary` only the figures (for the `ticker:<prefix>:chain` stream).
Both models serialise to JSON as they are (`model_dump(mode="json")`); a missing figure is None.

The statistics themselves live in `ticker.core.chain_stats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ticker.core import chain_stats as stats
from ticker.core.strikes import atm_strike

# The columns a leg may carry besides its strike and side; any left out are all-missing (NaN).
LEG_COLUMNS = ("ltp", "bid", "ask", "volume", "oi", "oi_open", "iv", "delta", "gamma", "theta", "vega", "age")
WING_DELTA = 0.25


@dataclass(frozen=True)
class ChainLegs:
    """One expiry's option legs as equal-length 1-D columns, one entry per option.

    `is_call` is boolean (False: put). `oi_open` is the OI at the day's open (for `oi_change`),
    `age` seconds since the leg's last tick; prices, IV and Greeks in the units the ticks carry.
    NaN marks a missing value. A leg whose strike is not a positive number is ignored; a strike
    and side listed twice keep the later entry (the caller's latest tick).
    """

    strike: np.ndarray
    is_call: np.ndarray
    ltp: np.ndarray | None = None
    bid: np.ndarray | None = None
    ask: np.ndarray | None = None
    volume: np.ndarray | None = None
    oi: np.ndarray | None = None
    oi_open: np.ndarray | None = None
    iv: np.ndarray | None = None
    delta: np.ndarray | None = None
    gamma: np.ndarray | None = None
    theta: np.ndarray | None = None
    vega: np.ndarray | None = None
    age: np.ndarray | None = None

    def __post_init__(self) -> None:
        strike = _column("strike", self.strike)
        flag = np.asarray(self.is_call)
        if flag.dtype.kind not in "biu" or flag.shape != strike.shape:
            raise ValueError("is_call must be a boolean column as long as strike")
        object.__setattr__(self, "strike", strike)
        object.__setattr__(self, "is_call", flag != 0)
        for name in LEG_COLUMNS:
            given = getattr(self, name)
            values = np.full(strike.shape, np.nan) if given is None else _column(name, given)
            if values.shape != strike.shape:
                raise ValueError(f"{name} must be as long as strike ({strike.size}), not {values.size}")
            object.__setattr__(self, name, values)

    def __len__(self) -> int:
        return int(self.strike.size)


def _column(name: str, value: object) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric") from exc
    if out.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    return out


@dataclass(frozen=True)
class ChainGrid:
    """The legs aligned by strike: `strikes` ascending and unique, `leg[i, side]` the index of that
    strike's call (side 0) or put (side 1) in the legs' columns, −1 where it is not listed."""

    strikes: np.ndarray
    leg: np.ndarray
    legs: ChainLegs = field(repr=False)

    @classmethod
    def of(cls, legs: ChainLegs) -> ChainGrid:
        with np.errstate(invalid="ignore"):
            keep = np.flatnonzero(np.isfinite(legs.strike) & (legs.strike > 0))
        strikes, row = np.unique(legs.strike[keep], return_inverse=True)
        side = np.where(legs.is_call[keep], stats.CALL, stats.PUT)
        leg = np.full((strikes.size, 2), -1, dtype=np.int64)
        np.maximum.at(leg, (row, side), keep)   # a repeated strike and side keeps its later entry
        return cls(strikes, leg, legs)

    def column(self, name: str) -> np.ndarray:
        """One leg column as (strikes, 2), NaN where the leg is missing."""
        values = getattr(self.legs, name)
        return np.where(self.leg >= 0, values[self.leg], np.nan)

    def block(self, names: tuple[str, ...]) -> np.ndarray:
        """Several leg columns as (strikes, 2, len(names)), NaN where the leg is missing: one
        gather for them all."""
        out = np.stack([getattr(self.legs, name) for name in names], axis=-1)[self.leg]
        out[self.leg < 0] = np.nan
        return out


class ChainMarket(BaseModel):
    """What the chain is priced against. `multiplier` turns one unit of OI into units of the
    underlying: 1 for Kite's OI (counted in units), the lot size for OI counted in contracts.
    `model` names the price the Greeks were taken against (Black-76: the forward; BSM: spot)."""

    model_config = ConfigDict(frozen=True)

    underlying: str | None = None
    expiry: date | None = None
    spot: float | None = None
    forward: float | None = None
    t: float | None = Field(None, description="years to expiry")
    multiplier: float = Field(1.0, gt=0)
    model: Literal["black76", "bsm"] = "black76"

    def atm_reference(self) -> float | None:
        """The price ATM is measured from: the forward, or spot while no forward is known."""
        return _positive(self.forward) or _positive(self.spot)

    def greeks_price(self) -> float | None:
        first, second = (self.forward, self.spot) if self.model == "black76" else (self.spot, self.forward)
        return _positive(first) or _positive(second)


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def _positive(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) and value > 0 else None


class ChainLegQuote(BaseModel):
    """One option of a chain row; None where the tick carries no value."""

    ltp: float | None = None
    bid: float | None = None
    ask: float | None = None
    volume: int | None = None
    oi: int | None = None
    oi_change: int | None = Field(None, description="oi − oi at the day's open")
    iv: float | None = None
    delta: float | None = None
    gamma: float | None = None
    theta: float | None = None
    vega: float | None = None
    age: float | None = Field(None, description="seconds since the leg's last tick")


class ChainStrike(BaseModel):
    """One strike: its call (`ce`) and put (`pe`), None where not listed, and its net GEX."""

    strike: float
    ce: ChainLegQuote | None = None
    pe: ChainLegQuote | None = None
    gex: float | None = None


class ChainSummary(BaseModel):
    """The chain's figures. IVs are annualised fractions; RR and BF in the same units.

    - `atm_strike`: the listed strike nearest the forward (spot while none), ties to the lower;
      `atm_iv` the mean of its call and put IV (or the one that exists); `straddle` their LTPs summed.
    - `pcr_oi`, `pcr_volume`: puts' total over calls' total (None when the calls' total is 0).
    - `max_pain`: the listed strike minimising holders' intrinsic payout at expiry.
    - `iv_25d_call`, `iv_25d_put`: IV at delta +0.25 / −0.25, interpolated in delta where two
      strikes bracket it; `rr_25d` = call − put, `bf_25d` = their mean − ATM IV.
    - `gex_total`: dealers' net gamma exposure, rupees of delta per 1% move, dealers long calls
      and short puts (see `chain_stats.gamma_exposure`).
    - `iv_percentile`: share (0–100) of the given history's daily ATM IVs below today's.
    """

    underlying: str | None = None
    expiry: date | None = None
    spot: float | None = None
    forward: float | None = None
    t: float | None = None
    strikes: int = 0
    atm_strike: float | None = None
    atm_iv: float | None = None
    straddle: float | None = None
    pcr_oi: float | None = None
    pcr_volume: float | None = None
    max_pain: float | None = None
    iv_25d_call: float | None = None
    iv_25d_put: float | None = None
    rr_25d: float | None = None
    bf_25d: float | None = None
    gex_total: float | None = None
    iv_percentile: float | None = None


class ChainSnapshot(ChainSummary):
    """The figures plus every strike's row, ascending by strike."""

    rows: list[ChainStrike] = Field(default_factory=list)


# --- public API ----------------------------------------------------------------------------------

def chain_summary(legs: ChainLegs, market: ChainMarket, iv_history: np.ndarray | None = None) -> ChainSummary:
    """The chain's figures without its rows (what the stream publishes)."""
    return ChainSummary(**_figures(ChainGrid.of(legs), market, iv_history)[0])


def chain_snapshot(legs: ChainLegs, market: ChainMarket, iv_history: np.ndarray | None = None) -> ChainSnapshot:
    """The chain's figures and its rows by strike."""
    grid = ChainGrid.of(legs)
    figures, gex = _figures(grid, market, iv_history)
    # One validation of the whole tree: far cheaper than a model built per leg.
    return ChainSnapshot.model_validate({**figures, "rows": _rows(grid, gex, None)})


@dataclass(frozen=True)
class LegLabels:
    """Each leg's instrument token and tradingsymbol, in the legs' order."""

    tokens: list[int]
    symbols: list[str]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.symbols):
            raise ValueError("tokens and symbols must be as many")


def chain_document(legs: ChainLegs, market: ChainMarket, iv_history: np.ndarray | None = None,
                   labels: LegLabels | None = None) -> dict[str, object]:
    """What `chain_snapshot(...).model_dump(mode="json")` gives, built without the models: for a
    caller that serialises it at once (`GET /chain`, the chain stream), validating every leg would
    cost more than computing the whole chain.

    With `labels` (as many as the legs), each leg as published instead: its `age` in seconds
    becomes `age_ms` (whole milliseconds, rounded half to even) after its `token` and
    `tradingsymbol`."""
    grid = ChainGrid.of(legs)
    figures, gex = _figures(grid, market, iv_history)
    out: dict[str, object] = {**_SUMMARY_DEFAULTS, **{k: _plain(v) for k, v in figures.items()}}
    out["expiry"] = market.expiry.isoformat() if market.expiry is not None else None
    out["rows"] = _rows(grid, gex, labels)
    return out


_SUMMARY_DEFAULTS = ChainSummary().model_dump(mode="json")


def _plain(value: object) -> object:
    """numpy scalars as Python's (not every JSON encoder takes them)."""
    return value.item() if isinstance(value, np.generic) else value


# --- figures ---------------------------------------------------------------------------------------

_FIGURE_COLUMNS = ("oi", "iv", "volume", "gamma", "delta", "ltp")


def _figures(grid: ChainGrid, market: ChainMarket, iv_history: np.ndarray | None
             ) -> tuple[dict[str, object], np.ndarray]:
    """The summary's fields, and the per-strike GEX (for the rows)."""
    out: dict[str, object] = {
        "underlying": market.underlying, "expiry": market.expiry, "spot": _finite(market.spot),
        "forward": _finite(market.forward), "t": _finite(market.t), "strikes": int(grid.strikes.size),
    }
    oi, iv, volume, gamma, delta, ltp = np.moveaxis(grid.block(_FIGURE_COLUMNS), -1, 0)
    atm = _atm(grid, iv, ltp, market.atm_reference())
    out.update(atm)
    out.update(_wings(grid, iv, delta, atm["atm_iv"]))
    out["pcr_oi"] = stats.put_call_ratio(oi)
    out["pcr_volume"] = stats.put_call_ratio(volume)
    out["max_pain"] = stats.max_pain(grid.strikes, oi)
    gex = np.full(grid.strikes.shape, np.nan)
    price = market.greeks_price()
    if price is not None:
        gex, out["gex_total"] = stats.gamma_exposure(gamma, oi, price, market.multiplier)
    if iv_history is not None and atm["atm_iv"] is not None:
        out["iv_percentile"] = stats.iv_percentile(iv_history, atm["atm_iv"])
    return out, gex


def _atm(grid: ChainGrid, iv: np.ndarray, ltps: np.ndarray, reference: float | None) -> dict[str, float | None]:
    if reference is None or grid.strikes.size == 0:
        return {"atm_strike": None, "atm_iv": None, "straddle": None}
    strike = atm_strike(grid.strikes.tolist(), reference)
    i = int(np.searchsorted(grid.strikes, strike))
    with np.errstate(invalid="ignore"):
        ltp = ltps[i]
        priced = bool(np.all(np.isfinite(ltp) & (ltp > 0)))
    return {"atm_strike": strike, "atm_iv": stats.atm_iv(iv[i, stats.CALL], iv[i, stats.PUT]),
            "straddle": float(ltp.sum()) if priced else None}


def _wings(grid: ChainGrid, iv: np.ndarray, delta: np.ndarray, atm: float | None) -> dict[str, float | None]:
    call = stats.wing_iv(grid.strikes, delta[:, stats.CALL], iv[:, stats.CALL], WING_DELTA)
    put = stats.wing_iv(grid.strikes, delta[:, stats.PUT], iv[:, stats.PUT], -WING_DELTA)
    if call is None or put is None:
        return {"iv_25d_call": call, "iv_25d_put": put, "rr_25d": None, "bf_25d": None}
    bf = (call + put) / 2.0 - atm if atm is not None else None
    return {"iv_25d_call": call, "iv_25d_put": put, "rr_25d": call - put, "bf_25d": bf}


# --- rows ------------------------------------------------------------------------------------------

_FLOATS = ("ltp", "bid", "ask", "iv", "delta", "gamma", "theta", "vega")
_COUNTS = ("volume", "oi", "oi_change")
_BARE: tuple[str, ...] = (*_FLOATS, "age", *_COUNTS)
_LABELLED: tuple[str, ...] = (*_FLOATS, *_COUNTS, "token", "tradingsymbol", "age_ms")


def _rows(grid: ChainGrid, gex: np.ndarray, labels: LegLabels | None) -> list[dict[str, object]]:
    """Every strike's row as plain data. The values go to Python in one block (strike, side,
    field) first: building the rows is then only picking from lists."""
    floats = grid.block(_FLOATS)
    whole = grid.block(("volume", "oi", "oi_open", "age"))
    volume, oi, oi_open, age = np.moveaxis(whole, -1, 0)
    if labels is None:
        names = _BARE
        columns = [_nullable(np.concatenate([floats, age[..., None]], axis=-1)),
                   _nullable(np.stack([volume, oi, oi - oi_open], axis=-1), True)]
    else:
        if len(labels.tokens) != len(grid.legs):
            raise ValueError(f"labels must be as many as the legs ({len(grid.legs)})")
        names = _LABELLED
        counts = np.stack([volume, oi, oi - oi_open], axis=-1)
        columns = [_nullable(floats), _nullable(counts, True), _labels(grid, labels.tokens)[..., None],
                   _labels(grid, labels.symbols)[..., None], _nullable(np.rint(age * 1000.0), True)[..., None]]
    block = np.concatenate(columns, axis=-1).tolist()
    listed = (grid.leg >= 0).tolist()
    out = []
    for strike, row_gex, values, has in zip(grid.strikes.tolist(), _nullable(gex).tolist(), block, listed,
                                            strict=True):
        ce, pe = (dict(zip(names, values[side], strict=True)) if has[side] else None
                  for side in (stats.CALL, stats.PUT))
        out.append({"strike": strike, "ce": ce, "pe": pe, "gex": row_gex})
    return out


def _labels(grid: ChainGrid, values: Sequence[object]) -> np.ndarray:
    """One label column as (strikes, 2) objects; what a missing leg picks is never read."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column[grid.leg]


def _nullable(values: np.ndarray, whole: bool = False) -> np.ndarray:
    """Python floats (ints for counts) in an object array, None where not finite."""
    finite = np.isfinite(values)
    out = np.where(finite, values, 0).astype(np.int64 if whole else np.float64).astype(object)
    out[~finite] = None
    return out
