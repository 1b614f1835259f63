"""The enrich stage: a batch of decoded ticks becomes what the render stage needs, per side.

Before anything else each tick is checked against what its token is, in one vectorised pass: a
token not in the instrument table is dropped as `unknown_token`, a packet whose layout or mode is
not one Kite sends for that token's kind (a 28-byte index packet carrying an option's token, say)
as `malformed`. Only the offending rows go; the rest of the batch goes on as usual.

Ticks are then split by the instrument table into options and underlyings (indices, stocks,
futures). All prices are recorded first (`latest_prices`), so an option priced in the same batch as
its future sees that future. IV and Greeks for every option tick come from one vectorised
`iv_and_greeks` call; underlying ticks feed the OHLC bars (`bars`). Nothing here renders JSON.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ticker.core.greeks import iv_and_greeks, time_to_expiry
from ticker.core.wire import Ticks, packet_fits
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.bars import Bar, BarBuilder
from ticker.streamer.stages.batch import Taken
from ticker.streamer.stages.instrument_table import InstrumentTable
from ticker.streamer.stages.latest_prices import LatestPrices, Model

log = logging.getLogger(__name__)

GREEKS = ("delta", "gamma", "theta", "vega", "rho")


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a batch (its options, or its underlyings), ready to render."""

    ticks: Ticks
    rows: np.ndarray  # instrument table row of each tick
    frame: np.ndarray  # index into `Enriched.frames` of each tick's frame
    columns: dict[str, np.ndarray]  # every value the side's JSON carries, by field


@dataclass
class Enriched:
    """One batch, enriched: both sides, the bars that closed, postbacks riding along."""

    orders: list[bytes]
    frames: np.ndarray = field(default_factory=lambda: np.empty(0))  # epoch seconds each frame arrived
    options: Side | None = None
    underlying: Side | None = None
    bars: list[Bar] = field(default_factory=list)
    oldest_received: float | None = None


class Enricher:
    def __init__(self, table: InstrumentTable, *, model: Model, rate: float, dividend_yield: float,
                 bar_interval: int, metrics: StreamerMetrics) -> None:
        self.table = table
        self.prices = LatestPrices(table, model, rate)
        self.model, self.rate, self.q = model, rate, dividend_yield
        self.bars = BarBuilder(bar_interval)
        self.metrics = metrics
        self.rejected_total = 0  # ticks dropped as malformed or of unknown tokens

    def rebind(self, table: InstrumentTable) -> None:
        self.table = table
        self.prices.rebind(table)
        self.bars.retain(set(table.tokens.tolist()))

    def process(self, taken: Taken, now: float) -> Enriched:
        out = Enriched(orders=taken.orders)
        if taken.chunks:
            out.frames = np.array([c.received for c in taken.chunks])
            out.oldest_received = min(c.received for c in taken.chunks)
            self._ticks_into(out, taken, now)
        out.bars += self.bars.due(now)
        return out

    def _ticks_into(self, out: Enriched, taken: Taken, now: float) -> None:
        ticks = Ticks.concat(c.ticks for c in taken.chunks)
        frame = np.repeat(np.arange(len(taken.chunks)), [len(c.ticks) for c in taken.chunks])
        rows = self.table.rows_of(ticks.token)
        keep = self._valid(ticks, rows)
        if keep is not None:
            ticks, rows, frame = ticks.take(keep), rows[keep], frame[keep]
        self.prices.observe(rows, ticks.last_price)
        is_option = self.table.is_option[rows]
        for options, mask in ((True, is_option), (False, ~is_option)):
            if not mask.any():
                continue
            part = (ticks, rows, frame) if mask.all() else (ticks.take(mask), rows[mask], frame[mask])
            if options:
                out.options = self._options(*part, now=now)
            else:
                out.underlying = self._underlying(*part, frames=out.frames, bars=out.bars)

    def _valid(self, ticks: Ticks, rows: np.ndarray) -> np.ndarray | None:
        """Mask of the rows fit to go on, None when all are; the others are counted as dropped."""
        fits = packet_fits(ticks.token, ticks.packet_length, ticks.mode)
        known = rows >= 0
        keep = fits & known
        if keep.all():
            return None
        malformed = int(len(fits) - np.count_nonzero(fits))
        if malformed:
            self.metrics.dropped.labels("malformed").inc(malformed)
        unknown = len(keep) - np.count_nonzero(keep) - malformed
        if unknown:
            self.metrics.dropped.labels("unknown_token").inc(int(unknown))
        self.rejected_total += len(keep) - int(np.count_nonzero(keep))
        return keep

    def _options(self, ticks: Ticks, rows: np.ndarray, frame: np.ndarray, *, now: float) -> Side:
        t = np.asarray(time_to_expiry(now, self.table.expiry[rows]), dtype=np.float64)
        spot = self.prices.underlying_price(rows, t)
        greeks = self._greeks(ticks.last_price, spot, self.table.strike[rows], t, self.table.is_call[rows])
        columns = {**ticks.columns(), **greeks, "underlying_price": spot, "volume": ticks.volume_traded}
        return Side(ticks, rows, frame, columns)

    def _underlying(self, ticks: Ticks, rows: np.ndarray, frame: np.ndarray, *, frames: np.ndarray,
                    bars: list[Bar]) -> Side:
        """Underlying ticks as they are, folded into their bars (those that closed go to `bars`)."""
        bars += self.bars.update(ticks.token, ticks.last_price, ticks.volume_traded, frames[frame])
        return Side(ticks, rows, frame, {**ticks.columns(), "volume": ticks.volume_traded})

    def _greeks(self, price: np.ndarray, spot: np.ndarray, strike: np.ndarray, t: np.ndarray,
                is_call: np.ndarray) -> dict[str, np.ndarray]:
        nan = np.full(len(price), np.nan)
        no_spot = np.isnan(spot)
        if no_spot.any():
            self.metrics.greeks_failures.labels("no_underlying").inc(int(no_spot.sum()))
        try:
            res = iv_and_greeks(price, spot, strike, t, self.rate, self.q, is_call, self.model)
        except Exception:  # a numerical bug must cost Greeks, never the stream
            log.exception("Greeks failed for a batch", extra={"size": len(price)})
            self.metrics.greeks_failures.labels("error").inc(len(price))
            return {name: nan for name in ("iv", *GREEKS)}
        out = {name: np.asarray(res[name], dtype=np.float64) for name in ("iv", *GREEKS)}
        no_iv = np.isnan(out["iv"]) & ~no_spot
        if no_iv.any():
            self.metrics.greeks_failures.labels("no_iv").inc(int(no_iv.sum()))
        return out
