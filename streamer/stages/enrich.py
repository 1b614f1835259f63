"""Enrich a flush's worth of decoded ticks into what subscribers receive.

Ticks are split by the registry into options and underlyings (indices, stocks, futures). All
prices are recorded first, so an option priced in the same flush as its future sees that future.
IV and Greeks for every option tick come from one vectorised `iv_and_greeks` call; underlying
ticks feed the OHLC bars. Output is per-tick JSON (see serialize.py) plus the latest-tick snapshot
fields that are due (see snapshot.py).

Before anything else each tick is checked against what its token is, in one vectorised pass: a
token not in the registry is dropped as `unknown_token`, a packet whose layout or mode is not one
Kite sends for that token's kind (a 28-byte index packet carrying an option's token, say) as
`malformed`. Only the offending rows go; the rest of the batch is rendered as usual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import tzinfo

import numpy as np
import orjson

from ticker.core.greeks import iv_and_greeks, time_to_expiry
from ticker.core.wire import Ticks, packet_fits
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.bars import Bar, BarBuilder, bar_doc
from ticker.streamer.stages.batch import Taken
from ticker.streamer.stages.instrument_table import InstrumentTable
from ticker.streamer.stages.latest_prices import LatestPrices, Model
from ticker.streamer.stages.latest_snapshot import LatestSnapshot
from ticker.streamer.stages.render import Renderer, json_tokens, text_column

log = logging.getLogger(__name__)

GREEKS = ("delta", "gamma", "theta", "vega", "rho")
_MARKET = ("last_price", "received_at")
_QUOTE = frozenset({*_MARKET, "volume"})
_OHLC = frozenset({"open", "high", "low", "close", "change"})

OPTION_FIELDS = ("last_price", "volume", "oi", "bid", "ask", "depth", "exchange_timestamp",
                 "underlying_price", "iv", *GREEKS, "received_at")
_PRICED = frozenset({*_MARKET, "underlying_price", "iv", *GREEKS})
OPTION_CARRIED = {
    8: _PRICED,
    44: _PRICED | _QUOTE,
    184: _PRICED | _QUOTE | {"oi", "bid", "ask", "depth", "exchange_timestamp"},
}
TICK_FIELDS = ("last_price", "volume", "oi", "open", "high", "low", "close", "change",
               "exchange_timestamp", "received_at")
TICK_CARRIED = {
    8: frozenset(_MARKET),
    28: frozenset(_MARKET) | _OHLC,
    32: frozenset(_MARKET) | _OHLC | {"exchange_timestamp"},
    44: _QUOTE | _OHLC,
    184: _QUOTE | _OHLC | {"oi", "exchange_timestamp"},
}


@dataclass
class Outgoing:
    """One flush, rendered: JSON per tick for each channel, bars, postbacks, and the latest-tick
    snapshot fields due with it (see snapshot.py)."""

    options: list[bytes] = field(default_factory=list)
    underlying: list[bytes] = field(default_factory=list)
    bars: list[bytes] = field(default_factory=list)
    orders: list[bytes] = field(default_factory=list)
    latest: dict[bytes, bytes] = field(default_factory=dict)
    oldest_received: float | None = None
    started: float = 0.0  # epoch seconds its flush began (taken from the buffer)

    @property
    def ticks(self) -> int:
        return len(self.options) + len(self.underlying)


@dataclass(frozen=True, slots=True)
class Received:
    """When each tick's frame arrived: epoch seconds, and the same as ready JSON text."""

    at: np.ndarray
    text: np.ndarray

    def take(self, index: np.ndarray) -> Received:
        return Received(self.at[index], self.text[index])


class Enricher:
    def __init__(self, registry: InstrumentTable, *, model: Model, rate: float, dividend_yield: float,
                 bar_interval: int, tz: tzinfo, metrics: StreamerMetrics, snapshot_seconds: float = 0.0) -> None:
        self.registry = registry
        self.snapshot = LatestSnapshot(snapshot_seconds)
        self.snapshot.rebind(registry.token_text)
        self.market = LatestPrices(registry, model, rate)
        self.model, self.rate, self.q = model, rate, dividend_yield
        self.bars = BarBuilder(bar_interval)
        self.tz = tz
        self.metrics = metrics
        self.rejected_total = 0  # ticks dropped as malformed or of unknown tokens
        self._options = Renderer(OPTION_FIELDS, OPTION_CARRIED, b'"model":"' + model.encode() + b'",', tz)
        self._ticks = Renderer(TICK_FIELDS, TICK_CARRIED, b"", tz)

    def rebind(self, registry: InstrumentTable) -> None:
        self.registry = registry
        self.market.rebind(registry)
        self.bars.retain(set(registry.tokens.tolist()))
        self.snapshot.rebind(registry.token_text)

    def process(self, taken: Taken, now: float) -> Outgoing:
        out = Outgoing(orders=taken.orders)
        if taken.chunks:
            out.oldest_received = min(c.received for c in taken.chunks)
            self._ticks_into(out, taken, now)
        out.bars += [self._bar_json(bar, now) for bar in self.bars.due(now)]
        out.latest = self.snapshot.take(now)
        return out

    def _ticks_into(self, out: Outgoing, taken: Taken, now: float) -> None:
        ticks = Ticks.concat(c.ticks for c in taken.chunks)
        sizes = [len(c.ticks) for c in taken.chunks]
        frames = np.array([c.received for c in taken.chunks])
        # A frame's ticks share its receipt time: rendered once per frame, not once per tick.
        received = Received(np.repeat(frames, sizes), np.repeat(text_column(json_tokens(frames)), sizes))
        rows = self.registry.rows_of(ticks.token)
        keep = self._valid(ticks, rows)
        if keep is not None:
            ticks, rows, received = ticks.take(keep), rows[keep], received.take(keep)
        self.market.observe(rows, ticks.last_price)
        is_option = self.registry.is_option[rows]
        for options, mask in ((True, is_option), (False, ~is_option)):
            if not mask.any():
                continue
            part = (ticks, rows, received) if mask.all() else (ticks.take(mask), rows[mask], received.take(mask))
            self._split_into(out, *part, options=options, now=now)

    def _valid(self, ticks: Ticks, rows: np.ndarray) -> np.ndarray | None:
        """Mask of the rows fit to render, None when all are; the others are counted as dropped."""
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

    def _split_into(self, out: Outgoing, ticks: Ticks, rows: np.ndarray, received: Received, *,
                    options: bool, now: float) -> None:
        """Render one side of the batch (options, or underlyings plus their bars)."""
        if options:
            out.options = self._render_options(ticks, rows, received.text, now)
            self.snapshot.put(rows, out.options, now)
            return
        out.underlying = self._render_ticks(ticks, rows, received.text, now)
        self.snapshot.put(rows, out.underlying, now)
        closed = self.bars.update(ticks.token, ticks.last_price, ticks.volume_traded, received.at)
        out.bars += [self._bar_json(b, now) for b in closed]

    def _render_options(self, ticks: Ticks, rows: np.ndarray, received: np.ndarray, now: float) -> list[bytes]:
        reg = self.registry
        t = np.asarray(time_to_expiry(now, reg.expiry[rows]), dtype=np.float64)
        spot = self.market.underlying_price(rows, t)
        greeks = self._greeks(ticks.last_price, spot, reg.strike[rows], t, reg.is_call[rows])
        columns = {**ticks.columns(), **greeks, "underlying_price": spot, "received_at": received,
                   "volume": ticks.volume_traded}
        heads = reg.option_head[rows].tolist()
        return self._options.render(heads, ticks.packet_length, columns, now)

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

    def _render_ticks(self, ticks: Ticks, rows: np.ndarray, received: np.ndarray, now: float) -> list[bytes]:
        columns = {**ticks.columns(), "received_at": received, "volume": ticks.volume_traded}
        heads = self.registry.tick_head[rows].tolist()
        return self._ticks.render(heads, ticks.packet_length, columns, now)

    def _bar_json(self, bar: Bar, now: float) -> bytes:
        rows = self.registry.rows_of(np.array([bar.token]))
        head: dict = {"instrument_token": bar.token}
        if rows[0] >= 0:
            row, reg = int(rows[0]), self.registry
            head.update(tradingsymbol=reg.symbols[row], name=reg.keys[row], instrument_type=reg.labels[row])
        return orjson.dumps(bar_doc(bar, self.bars.interval, head, self.tz, now))
