"""The render stage: an enriched batch becomes what subscribers receive, one flush.

Each side is rendered to one JSON object per tick by its channel's template (`json_columns`,
column-wise, with the instrument's static head pre-rendered by the instrument table); closed bars
become bar objects for the underlying channel; each tick's JSON is also offered to the latest-tick
snapshot (`latest_snapshot`), whose fields that are due ride along with the flush.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

import numpy as np
import orjson

from ticker.streamer.stages.bars import Bar, bar_doc
from ticker.streamer.stages.chain_stream import ChainOut
from ticker.streamer.stages.enrich import GREEKS, Enriched, Side
from ticker.streamer.stages.instrument_table import InstrumentTable
from ticker.streamer.stages.json_columns import Renderer, json_tokens, text_column
from ticker.streamer.stages.latest_snapshot import LatestSnapshot

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
    """One flush, rendered: JSON per tick for each channel, bars, postbacks, the latest-tick
    snapshot fields due with it (see latest_snapshot.py) and the chains due (see chain_stream.py)."""

    options: list[bytes] = field(default_factory=list)
    underlying: list[bytes] = field(default_factory=list)
    bars: list[bytes] = field(default_factory=list)
    orders: list[bytes] = field(default_factory=list)
    latest: dict[bytes, bytes] = field(default_factory=dict)
    chains: ChainOut = field(default_factory=ChainOut)  # chain messages and opening OIs (see chain_stream.py)
    oldest_received: float | None = None
    started: float = 0.0  # epoch seconds its flush began (taken from the buffer)
    # on a sharded tick bus, each item's shard (its underlying): per item of `options`, and of
    # `underlying` followed by `bars`; None when the bus is not sharded
    option_shards: list[str] | None = None
    underlying_shards: list[str] | None = None

    @property
    def ticks(self) -> int:
        return len(self.options) + len(self.underlying)


class BatchRenderer:
    def __init__(self, table: InstrumentTable, *, model: str, bar_interval: int, tz: tzinfo,
                 snapshot_seconds: float = 0.0, sharded: bool = False) -> None:
        self.table = table
        self.sharded = sharded  # label each tick with its shard (TICK_REDIS_CLUSTER)
        self.bar_interval = bar_interval
        self.tz = tz
        self.snapshot = LatestSnapshot(snapshot_seconds)
        self.snapshot.rebind(table.token_text)
        self._options = Renderer(OPTION_FIELDS, OPTION_CARRIED, b'"model":"' + model.encode() + b'",', tz)
        self._ticks = Renderer(TICK_FIELDS, TICK_CARRIED, b"", tz)

    def rebind(self, table: InstrumentTable) -> None:
        self.table = table
        self.snapshot.rebind(table.token_text)

    def render(self, batch: Enriched, now: float) -> Outgoing:
        out = Outgoing(orders=batch.orders, oldest_received=batch.oldest_received)
        # A frame's ticks share its receipt time: rendered once per frame, not once per tick.
        received = text_column(json_tokens(batch.frames))
        if batch.options is not None:
            out.options = self._side(self._options, self.table.option_head, batch.options, received, now)
        if batch.underlying is not None:
            out.underlying = self._side(self._ticks, self.table.tick_head, batch.underlying, received, now)
        out.bars = [self._bar_json(bar, now) for bar in batch.bars]
        out.latest = self.snapshot.take(now)
        if self.sharded:
            self._shards(batch, out)
        return out

    def _shards(self, batch: Enriched, out: Outgoing) -> None:
        keys = self.table.key_column
        out.option_shards = keys[batch.options.rows].tolist() if batch.options is not None else []
        out.underlying_shards = keys[batch.underlying.rows].tolist() if batch.underlying is not None else []
        bars = self.table.rows_of(np.array([bar.token for bar in batch.bars], dtype=np.int64))
        out.underlying_shards += [keys[row] if row >= 0 else "" for row in bars.tolist()]

    def _side(self, renderer: Renderer, heads: np.ndarray, side: Side, received: np.ndarray,
              now: float) -> list[bytes]:
        columns = {**side.columns, "received_at": received[side.frame]}
        rendered = renderer.render(heads[side.rows].tolist(), side.ticks.packet_length, columns, now)
        self.snapshot.put(side.rows, rendered, now)
        return rendered

    def _bar_json(self, bar: Bar, now: float) -> bytes:
        rows = self.table.rows_of(np.array([bar.token]))
        head: dict = {"instrument_token": bar.token}
        if rows[0] >= 0:
            row, table = int(rows[0]), self.table
            head.update(tradingsymbol=table.symbols[row], name=table.keys[row], instrument_type=table.labels[row])
        return orjson.dumps(bar_doc(bar, self.bar_interval, head, self.tz, now))
