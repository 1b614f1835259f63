"""Moving an instrument's price on demand (the admin API's `POST /_sim/price`).

Every price in the stand-in is the model price at its underlying's spot, so an instrument is moved
by moving that spot: the instrument lands on the asked price (to the tick) and its whole chain
moves consistently with it, in ticks, quotes, order matching and GTT triggers alike. The random
walk then carries on from the new level.
"""

from __future__ import annotations

import numpy as np

from ticker.infra.kitesim.envelopes import input_error
from ticker.infra.kitesim.market import Market, model_prices

# How far the solver looks for a spot, as multiples of the current one.
_LOW, _HIGH = 0.02, 50.0
_ITERATIONS = 100


def _price_at(market: Market, row: int, spot: float, now: float) -> float:
    rows = np.array([row], dtype=np.int64)
    return float(model_prices(market.uni, rows, np.array([spot]), now, market.rate, rounded=False)[0])


def spot_for(market: Market, row: int, target: float, now: float) -> float:
    """The underlying spot at which `row` is worth `target` (bisection: every model price is
    monotonic in the spot, rising for underlyings, futures and calls, falling for puts)."""
    spot = float(market.spots[market.uni.und[row]])
    lo, hi = spot * _LOW, spot * _HIGH
    p_lo, p_hi = _price_at(market, row, lo, now), _price_at(market, row, hi, now)
    rising = p_hi >= p_lo
    if not min(p_lo, p_hi) <= target <= max(p_lo, p_hi):
        raise input_error(f"`last_price` {target:g} is out of this instrument's reach "
                          f"({min(p_lo, p_hi):.2f} .. {max(p_lo, p_hi):.2f}).")
    for _ in range(_ITERATIONS):
        mid = (lo + hi) / 2
        if (_price_at(market, row, mid, now) < target) == rising:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def move_price(market: Market, row: int, target: float, now: float) -> float:
    """Set the row's underlying spot so the row trades at `target`; returns the price it now has."""
    if not np.isfinite(target) or target <= 0:
        raise input_error("`last_price` must be a positive number.")
    und = int(market.uni.und[row])
    market.spots[und] = spot_for(market, row, target, now)
    # Reprice the chain now, so the next tick and quote already show the new level.
    chain = np.flatnonzero(market.uni.und == und)
    prices = market.price_rows(chain, now)
    market.last_price[chain] = prices
    market.high[chain] = np.maximum(market.high[chain], prices)
    market.low[chain] = np.minimum(market.low[chain], prices)
    return float(market.last_price[row])
