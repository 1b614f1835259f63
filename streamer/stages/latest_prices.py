"""Latest prices per instrument table row, and the underlying price each option's Greeks are computed on.

black76 prices on the option's own expiry forward: the future of that expiry when it is streamed,
else the synthetic forward from put-call parity at the chain's ATM strike (the strike where call
and put prices are closest), else the spot carried at r. bsm prices on the spot, as the earlier
system did. NaN where no price to stand on exists yet.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ticker.core.greeks import synthetic_forward
from ticker.streamer.stages.instrument_table import InstrumentTable

Model = Literal["black76", "bsm"]


class LatestPrices:
    def __init__(self, table: InstrumentTable, model: Model, rate: float) -> None:
        self.table = table
        self.model = model
        self.rate = rate
        self.price = _unpriced(len(table))

    def rebind(self, table: InstrumentTable) -> None:
        """Switch to a reloaded instrument table, keeping the prices of tokens present in both."""
        price = _unpriced(len(table))
        rows = table.rows_of(self.table.tokens)
        kept = rows >= 0
        price[rows[kept]] = self.price[:-1][kept]
        self.table, self.price = table, price

    def observe(self, rows: np.ndarray, last_price: np.ndarray) -> None:
        """Record traded prices (rows -1 are unknown tokens; the last tick of a row wins)."""
        ok = (rows >= 0) & (last_price > 0)
        self.price[rows[ok]] = last_price[ok]

    def underlying_price(self, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The S to price options at `rows` with (forward for black76, spot for bsm)."""
        reg = self.table
        spot = self._price_at(reg.spot_row[rows])
        if self.model == "bsm":
            return spot
        forward = self._price_at(reg.fut_row[rows])
        missing = np.isnan(forward)
        if missing.any():
            forward[missing] = self._synthetic(reg.chain_id[rows[missing]], t[missing])
            missing = np.isnan(forward)
            forward[missing] = spot[missing] * np.exp(self.rate * t[missing])
        return forward

    def _price_at(self, rows: np.ndarray) -> np.ndarray:
        """Prices at rows; NaN where the row is -1 (the sentinel slot) or has not traded yet."""
        return self.price[rows]

    def _synthetic(self, chain_ids: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The synthetic forward of each option's chain (t per option; one chain shares one t)."""
        chains, first, where = np.unique(chain_ids, return_index=True, return_inverse=True)
        return self.chain_forwards(chains, t[first])[where.reshape(-1)]

    def chain_forwards(self, chains: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Put-call parity at each chain's strike where call and put prices are closest.

        Every chain's best strike is found at once over the flat chain layout (a segmented
        minimum, then the first slot reaching it), which costs less than gathering a few chains.
        """
        reg = self.table
        call = self._price_at(reg.chain_ce)
        put = self._price_at(reg.chain_pe)
        gap = np.abs(call - put)
        gap[np.isnan(gap)] = np.inf
        starts = reg.chain_start[:-1]
        lowest = np.minimum.reduceat(gap, starts)
        hits = np.flatnonzero(gap == np.repeat(lowest, np.diff(reg.chain_start)))
        best = hits[np.searchsorted(hits, starts[chains])]  # first slot of each chain at its minimum
        forward = np.asarray(synthetic_forward(call[best], put[best], reg.chain_strike[best], t, self.rate),
                             dtype=np.float64)
        forward[~np.isfinite(lowest[chains]) | ~(t > 0)] = np.nan
        return forward


def _unpriced(rows: int) -> np.ndarray:
    """Last traded price per instrument table row, NaN until a row trades, plus one NaN slot at the end
    that row -1 ("no such instrument") indexes, so a gather needs no masking."""
    return np.full(rows + 1, np.nan)
