"""The stand-in's clock: every tick interval one market step, one matching pass over resting
orders, one numpy repricing of every instrument due to tick on any connection, and one encoded
frame per connection.

Phases: with `tick_phases="staggered"` (the default) each connection's frame is built and sent its
own stable fraction of the interval (`TickerConn.phase`) after the step that chose its ticks, as
independent Kite sockets opened at different moments would send; `"aligned"` builds and sends every
connection's frame at the step itself, the worst case for a client reading many sockets.

Tick rates: each subscription ticks `tick_rate` times a second (default: every interval); a total
`ticks_per_second` target scales every rate so the sum over all connections meets it (capped at
one tick per subscription per interval); `rate_by_token` overrides single instruments.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import numpy as np

from ticker.core.wire import Ticks, encode
from ticker.infra.kitesim.config import TickPhases
from ticker.infra.kitesim.counters import Counters
from ticker.infra.kitesim.market import Market
from ticker.infra.kitesim.order_book import OrderBook
from ticker.infra.kitesim.ws import TickerConn, TickerHub

log = logging.getLogger(__name__)
MAX_RATE_OVERRIDES = 100_000


class Engine:
    def __init__(self, market: Market, orders: OrderBook, hub: TickerHub, counters: Counters,
                 interval_ms: float, tick_rate: float | None, ticks_per_second: float | None,
                 heartbeat_seconds: float, phases: TickPhases = "staggered") -> None:
        self.market, self.orders, self.hub, self.counters = market, orders, hub, counters
        self.interval = interval_ms / 1000.0
        self.phases: TickPhases = phases
        self.tick_rate = tick_rate
        self.ticks_per_second = ticks_per_second
        self.heartbeat = heartbeat_seconds
        self.rate_by_token: dict[int, float] = {}
        self.drop_every: float | None = None
        # Test hook: called with (connection, the Ticks meant, the encoded frame) for every frame.
        self.tap: Callable[[TickerConn, Ticks, bytes], None] | None = None
        # Called with the time after each matching pass (GTT triggers watch prices here).
        self.after_match: list[Callable[[float], object]] = []
        self._last = time.monotonic()
        self._last_drop = time.monotonic()

    def set_rates(self, interval_ms: float | None = None, tick_rate: float | None = None,
                  ticks_per_second: float | None = None, per_token: dict[int, float] | None = None,
                  clear: bool = False, phases: TickPhases | None = None) -> None:
        if interval_ms is not None:
            self.interval = interval_ms / 1000.0
        if phases is not None:
            self.phases = phases
        if clear:
            self.tick_rate = self.ticks_per_second = None
            self.rate_by_token.clear()
        if tick_rate is not None:
            self.tick_rate = tick_rate
        if ticks_per_second is not None:
            self.ticks_per_second = ticks_per_second
        if per_token:
            if len(self.rate_by_token) + len(per_token) > MAX_RATE_OVERRIDES:
                raise ValueError(f"at most {MAX_RATE_OVERRIDES} per-token rates")
            self.rate_by_token.update(per_token)

    def describe(self) -> dict:
        return {"tick_interval_ms": self.interval * 1000, "tick_phases": self.phases, "tick_rate": self.tick_rate,
                "ticks_per_second": self.ticks_per_second, "drop_every_seconds": self.drop_every,
                "rate_by_token": {str(k): v for k, v in self.rate_by_token.items()}}

    async def run(self) -> None:
        """Tick until cancelled, waking between steps to send held frames when they are due; a
        failing step is logged and the clock keeps going."""
        next_at = time.monotonic()
        while True:
            mono = time.monotonic()
            if mono >= next_at:
                try:
                    self.step(time.time(), mono)
                except Exception:
                    log.exception("sim engine step failed")
                next_at = max(next_at + self.interval, time.monotonic() - self.interval)
            else:
                try:
                    self.release(mono)
                except Exception:
                    log.exception("sim engine release failed")
            wake = min(next_at, self._next_release())
            await asyncio.sleep(max(0.0, wake - time.monotonic()))

    def release(self, mono: float) -> None:
        """Queue every held frame whose send time is `mono` or earlier."""
        for conn in self.hub.conns.values():
            conn.release(mono)

    def _next_release(self) -> float:
        return min((c.held[0][0] for c in self.hub.conns.values() if c.held), default=math.inf)

    # --- one step --------------------------------------------------------------------------------
    def step(self, now: float, mono: float) -> None:
        dt, self._last = mono - self._last, mono
        self.release(mono)  # held frames now due go out before this step's
        self.market.step(now)
        self.orders.match(now)
        for hook in self.after_match:
            hook(now)
        self._maybe_drop(mono)
        live = [c for c in self.hub.conns.values() if not c.stalled]
        if self.market.is_open(now):
            self._tick(live, dt, mono, now)
        for conn in live:
            if not conn.frames and not conn.held and mono - conn.last_sent >= self.heartbeat:
                conn.push_frame(b"\x00")
                conn.last_sent = mono

    def _maybe_drop(self, mono: float) -> None:
        if self.drop_every and mono - self._last_drop >= self.drop_every:
            self._last_drop = mono
            self.hub.drop()
        elif not self.drop_every:
            self._last_drop = mono

    def _rates(self, conns: list[TickerConn]) -> list[np.ndarray]:
        base = self.tick_rate if self.tick_rate else 1.0 / self.interval
        rates = []
        for c in conns:
            r = np.full(len(c.tokens), base)
            if self.rate_by_token:
                over = [self.rate_by_token.get(t) for t in c.tokens.tolist()]
                r = np.array([base if o is None else o for o in over])
            rates.append(r)
        if self.ticks_per_second:
            total = sum(float(r.sum()) for r in rates)
            if total > 0:
                rates = [r * (self.ticks_per_second / total) for r in rates]
        return rates

    def _send(self, conn: TickerConn, rows: np.ndarray, now: float, mono: float) -> None:
        """Build `conn`'s frame of `rows` now, or hold it until its phase of the interval."""
        tokens, modes = conn.tokens[rows], conn.modes[rows]
        picked = conn.rows[rows]

        def frame() -> bytes:
            ticks = self.build(picked, tokens, modes, now)
            out = encode(ticks)
            if self.tap is not None:
                self.tap(conn, ticks, out)
            return out

        if self.phases == "staggered" and conn.phase:
            conn.hold_frame(frame, mono + conn.phase * self.interval)
        elif conn.held:  # just aligned: behind the frames still held, never before them
            conn.hold_frame(frame, conn.held[-1][0])
        else:
            conn.push_frame(frame())

    def _tick(self, conns: list[TickerConn], dt: float, mono: float, now: float) -> None:
        conns = [c for c in conns if len(c.rows) and c.can_take_frame()]
        self.counters.frames_skipped += sum(
            1 for c in self.hub.conns.values() if len(c.rows) and not c.can_take_frame())
        if not conns:
            return
        due = []
        for c, r in zip(conns, self._rates(conns), strict=True):
            c.acc = np.minimum(c.acc + r * dt, 2.0)
            mask = c.acc >= 1.0 - 1e-9
            c.acc[mask] -= 1.0
            due.append(mask)
        union = np.unique(np.concatenate([c.rows[m] for c, m in zip(conns, due, strict=True)]))
        if not len(union):
            return
        self.market.trade(union, now)
        for c, mask in zip(conns, due, strict=True):
            if mask.any():
                self._send(c, np.flatnonzero(mask), now, mono)
                c.ticks_sent += int(mask.sum())
                self.counters.frames_sent += 1
                self.counters.ticks_sent += int(mask.sum())

    def build(self, rows: np.ndarray, tokens: np.ndarray, modes: np.ndarray, now: float) -> Ticks:
        """Ticks for rows from the market's current state (depth only where mode is full)."""
        m = self.market
        full = modes == 2
        cols: dict[str, np.ndarray] = {}
        if full.any():
            depth = m.depth(rows)
            cols.update(depth)
        buy_q = cols["depth_buy_quantity"].sum(axis=1) * 7 if cols else m.uni.lot[rows] * 500
        sell_q = cols["depth_sell_quantity"].sum(axis=1) * 7 if cols else m.uni.lot[rows] * 500
        return Ticks.build(
            token=tokens, mode=modes, last_price=m.last_price[rows],
            last_traded_quantity=m.last_qty[rows], average_traded_price=np.round(m.avg_price[rows], 2),
            volume_traded=m.volume[rows], total_buy_quantity=buy_q, total_sell_quantity=sell_q,
            open=m.open[rows], high=m.high[rows], low=m.low[rows], close=m.prev_close[rows],
            last_trade_time=m.last_trade_time[rows], exchange_timestamp=np.full(len(rows), int(now)),
            oi=m.oi[rows], oi_day_high=m.oi_high[rows], oi_day_low=m.oi_low[rows], **cols,
        )
