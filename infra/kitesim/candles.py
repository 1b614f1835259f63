"""Historical candles, deterministic for any range: a pure function of the seed, the instrument
and the timestamp (see pricepath.py). Candles exist only in NSE session minutes on trading days, up to
now and, for derivatives, up to expiry.

An option candle prices the underlying's candle with the model (`market.model_prices`) at the
candle's own timestamp, so an IV recomputed from (option close, underlying close, candle time)
matches `market.model_vol` up to tick rounding. Kite's per-request day limits per interval are
enforced with Kite's InputException message. NSE holidays (core.holidays) have no candles.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np

from ticker.core.clock import IST
from ticker.core.history import KITE_MAX_DAYS
from ticker.infra.kitesim.envelopes import input_error
from ticker.infra.kitesim.market import model_prices
from ticker.infra.kitesim.pricepath import STEPS_PER_MINUTE, PricePath, is_session_day, session_open_epoch
from ticker.infra.kitesim.universe import KIND_UNDERLYING, Universe

INTERVAL_MINUTES = {"minute": 1, "3minute": 3, "5minute": 5, "10minute": 10, "15minute": 15,
                    "30minute": 30, "60minute": 60, "day": 375}
MAX_DAYS = KITE_MAX_DAYS  # Kite's per-request limits, which the stand-in enforces
_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_when(raw: str | None, name: str) -> datetime:
    """Kite's `from`/`to` (IST wall time, date or date+time); a bare `to` date means its whole day."""
    for fmt in _FORMATS:
        try:
            when = datetime.strptime((raw or "").strip(), fmt).replace(tzinfo=IST)
        except ValueError:
            continue
        if name == "to" and fmt == "%Y-%m-%d":
            when = when.replace(hour=23, minute=59, second=59)
        return when
    raise input_error(f"Invalid `{name}` date: expected yyyy-mm-dd or yyyy-mm-dd hh:mm:ss.")


def check_request(interval: str, start: datetime, end: datetime) -> None:
    if interval not in INTERVAL_MINUTES:
        raise input_error(f"Invalid `interval`. Allowed: {', '.join(INTERVAL_MINUTES)}.")
    if end < start:
        raise input_error("Invalid date range: `from` is after `to`.")
    if (end.date() - start.date()).days > MAX_DAYS[interval]:
        raise input_error(f"interval exceeds max limit: {MAX_DAYS[interval]} days")


def kite_stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, IST).strftime("%Y-%m-%dT%H:%M:%S+0530")


class History:
    def __init__(self, uni: Universe, path: PricePath, seed: int, rate: float) -> None:
        self.uni, self.path, self.seed, self.rate = uni, path, seed, rate

    def candles(self, row: int, interval: str, start: datetime, end: datetime, oi: bool,
                now: float) -> list[list]:
        expiry = self.uni.expiry[row]
        last_day = min(end.date(), datetime.fromtimestamp(now, IST).date(), expiry or date.max)
        out: list[list] = []
        d = start.date()
        while d <= last_day:
            if is_session_day(d):
                out.extend(self._day(row, d, interval, start.timestamp(), end.timestamp(), oi, now))
            d += timedelta(days=1)
        return out

    def _day(self, row: int, d: date, interval: str, lo: float, hi: float, oi: bool,
             now: float) -> list[list]:
        u = self.uni.underlyings[self.uni.und[row]]
        path = self.path.day(u.name, u.spot, u.vol, d)
        minutes = INTERVAL_MINUTES[interval]
        o, h, low, c, ts = _bars(path, minutes, session_open_epoch(d))
        if interval == "day":
            ts = np.array([datetime(d.year, d.month, d.day, tzinfo=IST).timestamp()])
            keep = np.ones(1, bool) & (session_open_epoch(d) <= now)
        else:
            keep = (ts >= lo) & (ts <= hi) & (ts <= now)
        if not keep.any():
            return []
        o, h, low, c, ts = o[keep], h[keep], low[keep], c[keep], ts[keep]
        o, h, low, c = self._instrument_prices(row, o, h, low, c, ts)
        vol, open_int = self._volume_oi(row, d, minutes, keep)
        rows = []
        for i in range(len(ts)):
            candle = [kite_stamp(ts[i]), o[i], h[i], low[i], c[i], int(vol[i])]
            if oi:
                candle.append(int(open_int[i]))
            rows.append(candle)
        return rows

    def _instrument_prices(self, row: int, *arrays: np.ndarray) -> list[np.ndarray]:
        o, h, low, c, ts = arrays
        rows = np.full(len(ts), row)
        priced = [model_prices(self.uni, rows, a, ts, self.rate) for a in (o, h, low, c)]
        hi, lo = np.maximum(priced[1], priced[2]), np.minimum(priced[1], priced[2])
        return [priced[0].tolist(), hi.tolist(), lo.tolist(), priced[3].tolist()]

    def _volume_oi(self, row: int, d: date, minutes: int, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic per-minute volumes and a drifting open interest, in whole lots."""
        n = len(keep)
        if self.uni.kind[row] == KIND_UNDERLYING and self.uni.is_index_row[row]:
            return np.zeros(n, np.int64)[keep], np.zeros(n, np.int64)[keep]
        g = np.random.default_rng([self.seed, int(self.uni.token[row]), d.toordinal(), 3])
        lot = int(self.uni.lot[row])
        per_minute = g.integers(0, 400, 375) * lot
        starts = np.arange(0, 375, minutes)
        volume = np.add.reduceat(per_minute, starts)
        if self.uni.kind[row] == KIND_UNDERLYING:
            return volume[keep], np.zeros(n, np.int64)[keep]
        base = int(g.integers(5_000, 80_000)) * lot
        drift = np.cumsum(g.integers(-40, 41, 375))[np.minimum(starts + minutes - 1, 374)]
        return volume[keep], np.maximum(base + drift * lot, 0)[keep]


def _bars(path: np.ndarray, minutes: int, day_open: float) -> tuple[np.ndarray, ...]:
    """OHLC of the underlying path in bars of `minutes` from 09:15 (the last one may be short)."""
    k = STEPS_PER_MINUTE
    n_min = (len(path) - 1) // k
    starts = np.arange(0, n_min, minutes)
    ends = np.minimum(starts + minutes, n_min)
    opens = path[starts * k]
    closes = path[ends * k]
    highs = np.maximum.reduceat(path[:-1], starts * k)
    lows = np.minimum.reduceat(path[:-1], starts * k)
    highs = np.maximum(highs, closes)
    lows = np.minimum(lows, closes)
    ts = day_open + starts * 60.0
    return opens, highs, lows, closes, ts
