"""The stand-in's market model: a volatility smile, model prices, and the live market state.

Pricing contract (other parts' tests rely on it): an option is priced with Black-76 on the forward
of its own expiry, F = S·e^{r·t}, r = `SimConfig.rate`, q = 0, t = calendar days / 365 to 15:30 IST
on expiry, at volatility `model_vol(name, strike, F, t)`; futures trade at that same F. Prices are
then rounded to the 0.05 tick, so an IV recovered from a price matches `model_vol` up to that
rounding (well under 1e-3 for options with real time value).
"""

from __future__ import annotations

import time as _time
from datetime import datetime

import numpy as np

from ticker.core.clock import IST, is_market_open
from ticker.core.greeks import price as bs_price
from ticker.core.instruments import round_to_tick
from ticker.infra.kitesim.pricepath import STEPS, TRADING_DAYS, PricePath, previous_session_day
from ticker.infra.kitesim.universe import (
    INDICES,
    KIND_CE,
    KIND_FUT,
    KIND_PE,
    KIND_UNDERLYING,
    Universe,
    stock_underlyings,
)

YEAR_SECONDS = 365.0 * 86_400.0
SESSION_SECONDS_PER_YEAR = TRADING_DAYS * STEPS * 15.0
_SMILE = {u.name: (u.vol, u.skew, u.curvature) for u in (*INDICES, *stock_underlyings(200))}
MIN_VOL, MAX_VOL = 0.03, 3.0


def model_vol(name: str, strike: np.ndarray | float, forward: np.ndarray | float,
              t: np.ndarray | float) -> np.ndarray | float:
    """The smile the stand-in prices options with: base + skew·k + curvature·k² plus a short-dated
    bump, k = ln(K/F). Broadcasts over arrays; returns a float for scalar inputs."""
    if name not in _SMILE:
        raise KeyError(f"no volatility model for underlying {name!r}")
    base, skew, curvature = _SMILE[name]
    k = np.log(np.asarray(strike, dtype=float) / np.asarray(forward, dtype=float))
    t = np.maximum(np.asarray(t, dtype=float), 0.0)
    vol = np.clip(base + skew * k + curvature * k * k + 0.015 * np.exp(-t / 0.02), MIN_VOL, MAX_VOL)
    return float(vol) if vol.ndim == 0 else vol


def _vol_rows(names: list[str], und: np.ndarray, strike: np.ndarray, fwd: np.ndarray,
              t: np.ndarray) -> np.ndarray:
    """model_vol over rows of several underlyings at once."""
    params = np.array([_SMILE[n] for n in names])[und]
    k = np.log(strike / fwd)
    vol = params[:, 0] + params[:, 1] * k + params[:, 2] * k * k + 0.015 * np.exp(-np.maximum(t, 0) / 0.02)
    return np.clip(vol, MIN_VOL, MAX_VOL)


def option_value(fwd: np.ndarray, strike: np.ndarray, t: np.ndarray, r: float, sigma: np.ndarray,
                 is_call: np.ndarray) -> np.ndarray:
    """Black-76 value; intrinsic once the option has expired (t <= 0)."""
    live = t > 0
    out = np.where(is_call, np.maximum(fwd - strike, 0.0), np.maximum(strike - fwd, 0.0))
    if live.any():
        out[live] = bs_price(fwd[live], strike[live], t[live], r, 0.0, sigma[live], is_call[live],
                             model="black76")
    return out


def model_prices(uni: Universe, rows: np.ndarray, spots: np.ndarray, ts: np.ndarray | float,
                 r: float, rounded: bool = True) -> np.ndarray:
    """Model price of each row given its underlying's spot (`spots[i]` for row i) at time(s) ts."""
    rows = np.asarray(rows, dtype=np.int64)
    spots = np.asarray(spots, dtype=float)
    kind = uni.kind[rows]
    t = (uni.expiry_ts[rows] - np.asarray(ts, dtype=float)) / YEAR_SECONDS
    fwd = spots * np.exp(r * np.where(np.isfinite(t), np.maximum(t, 0.0), 0.0))
    out = np.where(kind == KIND_UNDERLYING, spots, fwd)
    opt = (kind == KIND_CE) | (kind == KIND_PE)
    if opt.any():
        strike = uni.strike[rows][opt]
        names = [u.name for u in uni.underlyings]
        sigma = _vol_rows(names, uni.und[rows][opt], strike, fwd[opt], t[opt])
        out[opt] = option_value(fwd[opt], strike, t[opt], r, sigma, kind[opt] == KIND_CE)
    if not rounded:
        return out
    priced = round_to_tick(out, uni.tick[rows])
    # A live option never quotes below one tick.
    return np.where(opt & (priced <= 0) & (t > 0), 0.05, priced)


class Market:
    """Live state: underlying spots walking while the market is open, per-row session stats."""

    def __init__(self, uni: Universe, path: PricePath, seed: int, rate: float,
                 hours: str = "always", now: float | None = None) -> None:
        now = _time.time() if now is None else now
        self.uni, self.path, self.rate, self.hours = uni, path, rate, hours
        self.rng = np.random.default_rng([seed, 7])
        self.spots = np.array([path.at(u.name, u.spot, u.vol, now) for u in uni.underlyings])
        self.vols = np.array([u.vol for u in uni.underlyings])
        self.last_step = now
        self._init_rows(now)

    def _init_rows(self, now: float) -> None:
        uni, n = self.uni, len(self.uni)
        rows = np.arange(n)
        prev_day = previous_session_day(_ist_datetime(now).date())
        prev_spots = np.array([self.path.day(u.name, u.spot, u.vol, prev_day)[-1]
                               for u in uni.underlyings])
        self.prev_close = model_prices(uni, rows, prev_spots[uni.und], now - 86_400.0, self.rate)
        self.last_price = model_prices(uni, rows, self.spots[uni.und], now, self.rate)
        self.open = self.last_price.copy()
        self.high = self.last_price.copy()
        self.low = self.last_price.copy()
        tradable = ~uni.is_index_row
        self.volume = np.zeros(n, np.int64)
        self.last_qty = np.zeros(n, np.int64)
        self.avg_price = np.where(tradable, self.last_price, 0.0)
        self.oi = np.where(uni.kind == KIND_UNDERLYING, 0, self._initial_oi()).astype(np.int64)
        self.oi_high = self.oi.copy()
        self.oi_low = self.oi.copy()
        self.last_trade_time = np.full(n, int(now), np.int64)

    def _initial_oi(self) -> np.ndarray:
        """Open interest peaking at the money, in whole lots."""
        uni = self.uni
        spot = self.spots[uni.und]
        money = np.log(np.where(uni.strike > 0, uni.strike, spot) / spot)
        lots = np.where(uni.kind == KIND_FUT, 150_000, 2_000 + 60_000 * np.exp(-(money / 0.04) ** 2))
        return (lots * self.rng.uniform(0.7, 1.3, len(uni))).astype(np.int64) * uni.lot

    # --- clock -----------------------------------------------------------------------------------
    def is_open(self, now: float) -> bool:
        return self.hours == "always" or is_market_open(_ist_datetime(now))

    def step(self, now: float) -> bool:
        """Advance every underlying by a seeded random walk over the elapsed trading time."""
        dt = max(0.0, now - self.last_step)
        self.last_step = now
        if dt == 0.0 or not self.is_open(now):
            return False
        var = self.vols ** 2 * (dt / SESSION_SECONDS_PER_YEAR)
        self.spots = self.spots * np.exp(np.sqrt(var) * self.rng.standard_normal(len(self.spots)) - var / 2)
        return True

    # --- prices ----------------------------------------------------------------------------------
    def price_rows(self, rows: np.ndarray, now: float | None = None) -> np.ndarray:
        """Current model prices of rows (no trading stats touched)."""
        now = _time.time() if now is None else now
        return model_prices(self.uni, rows, self.spots[self.uni.und[rows]], now, self.rate)

    def trade(self, rows: np.ndarray, now: float) -> None:
        """Reprice rows and record a trade on each tradable one: volume, OI, high/low, VWAP."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        ltp = self.price_rows(rows, now)
        lots = self.uni.lot[rows]
        tradable = ~self.uni.is_index_row[rows]
        qty = self.rng.integers(1, 11, len(rows)) * lots * tradable
        vol = self.volume[rows] + qty
        self.avg_price[rows] = np.where(
            vol > 0, (self.avg_price[rows] * self.volume[rows] + ltp * qty) / np.maximum(vol, 1), 0.0)
        self.volume[rows] = vol
        self.last_qty[rows] = qty
        self.last_price[rows] = ltp
        self.high[rows] = np.maximum(self.high[rows], ltp)
        self.low[rows] = np.minimum(self.low[rows], ltp)
        has_oi = self.oi[rows] > 0
        oi = np.maximum(self.oi[rows] + self.rng.integers(-3, 4, len(rows)) * lots * has_oi, 0)
        self.oi[rows] = oi
        self.oi_high[rows] = np.maximum(self.oi_high[rows], oi)
        self.oi_low[rows] = np.minimum(self.oi_low[rows], oi)
        self.last_trade_time[rows] = int(now)

    def depth(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Five bid and five ask levels around the last price on the tick grid."""
        n = len(rows)
        tick = np.where(self.uni.tick[rows] > 0, self.uni.tick[rows], 0.05)[:, None]
        ltp = self.last_price[rows][:, None]
        level = np.arange(5)[None, :]
        bid = np.maximum(np.round((ltp - tick * (level + 1)) / tick) * tick, 0.0)
        ask = np.round((ltp + tick * (level + 1)) / tick) * tick
        lots = self.uni.lot[rows][:, None]
        live_bid = bid > 0  # no bids at or below zero: those levels stay empty
        return {
            "depth_buy_price": np.round(bid, 2), "depth_sell_price": np.round(ask, 2),
            "depth_buy_quantity": self.rng.integers(1, 60, (n, 5)) * lots * live_bid,
            "depth_sell_quantity": self.rng.integers(1, 60, (n, 5)) * lots,
            "depth_buy_orders": self.rng.integers(1, 25, (n, 5)) * live_bid,
            "depth_sell_orders": self.rng.integers(1, 25, (n, 5)),
        }


def _ist_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, IST)
