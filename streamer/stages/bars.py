"""OHLC bars of underlying instruments (indices, stocks, futures) per fixed interval.

Bars are bucketed by receipt time, which only moves forward, so a closed bar never reopens.
A bar is emitted once, when a tick of a later interval arrives or when its interval has passed
(`due`), so quiet instruments still get their bar. One open bar per token: bounded by the instrument table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

import numpy as np


@dataclass(slots=True)
class Bar:
    token: int
    start: float
    open: float
    high: float
    low: float
    close: float
    ticks: int = 1
    volume_start: int = 0
    volume_end: int = 0

    def add(self, price: float, volume: int) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.ticks += 1
        self.volume_end = max(self.volume_end, volume)


class BarBuilder:
    def __init__(self, interval_seconds: int) -> None:
        self.interval = interval_seconds
        self._open: dict[int, Bar] = {}

    def update(self, tokens: np.ndarray, prices: np.ndarray, volumes: np.ndarray,
               received: np.ndarray) -> list[Bar]:
        """Fold ticks in; returns bars that closed because a later interval began."""
        closed: list[Bar] = []
        starts = (received // self.interval) * self.interval
        for tok, price, vol, start in zip(tokens.tolist(), prices.tolist(), volumes.tolist(),
                                          starts.tolist(), strict=True):
            if price <= 0:
                continue
            bar = self._open.get(tok)
            carried = vol
            if bar is not None and start > bar.start:
                closed.append(bar)
                carried, bar = bar.volume_end, None  # the new bar's volume counts from here
            if bar is None:
                self._open[tok] = Bar(tok, start, price, price, price, price, 1, carried, vol)
            else:
                bar.add(price, vol)
        return closed

    def due(self, now: float) -> list[Bar]:
        """Bars whose interval is over; they are removed."""
        done = [b for b in self._open.values() if b.start + self.interval <= now]
        for bar in done:
            del self._open[bar.token]
        return done

    def retain(self, tokens: set[int]) -> None:
        """Forget open bars of instruments no longer streamed."""
        for tok in [t for t in self._open if t not in tokens]:
            del self._open[tok]


def bar_doc(bar: Bar, interval: int, head: dict, tz: tzinfo, ts: float) -> dict:
    """The bar as published on the underlying channel."""
    return {
        "type": "bar", **head, "interval": interval,
        "start": datetime.fromtimestamp(bar.start, tz).isoformat(),
        "end": datetime.fromtimestamp(bar.start + interval, tz).isoformat(),
        "open": bar.open, "high": bar.high, "low": bar.low, "close": bar.close,
        "volume": bar.volume_end - bar.volume_start, "ticks": bar.ticks, "ts": ts,
    }
