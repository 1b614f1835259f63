"""Candles as numpy columns, and their Postgres cache (`history_cache`, one row per finished day).

Kite sends candles as `[timestamp, open, high, low, close, volume(, oi)]` with timestamps like
`2024-01-02T09:15:00+0530` (read by the Kite adapter as `Candle`s); here they become epoch seconds
and float/int columns, so slicing, aligning and pricing stay vectorized. Cached days are stored
columnar as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np

from ticker.infra.kite.schemas import Candle

IST_OFFSET = 19_800  # Asia/Kolkata is UTC+05:30 all year
_EPOCH_DAY = date(1970, 1, 1)


def _offset_seconds(suffix: str) -> int:
    if suffix in ("", "Z"):
        return 0
    sign = -1 if suffix[0] == "-" else 1
    digits = suffix[1:].replace(":", "")
    if len(digits) != 4 or not digits.isdigit():
        raise ValueError(f"unexpected time zone offset {suffix!r} in a Kite timestamp")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)


def parse_stamps(stamps: list[str]) -> np.ndarray:
    """Kite timestamps -> epoch seconds (float64)."""
    if not stamps:
        return np.empty(0)
    local = np.array([s[:19] for s in stamps], dtype="datetime64[s]").astype(np.int64)
    suffixes = {s[19:] for s in stamps}
    if len(suffixes) == 1:
        return (local - _offset_seconds(suffixes.pop())).astype(np.float64)
    return (local - np.array([_offset_seconds(s[19:]) for s in stamps])).astype(np.float64)


def ist_days(t: np.ndarray) -> np.ndarray:
    """Calendar day number (days since 1970-01-01) in IST of each epoch time."""
    return ((t + IST_OFFSET) // 86_400).astype(np.int64)


@dataclass
class Candles:
    t: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray  # noqa: E741 - Kite's column letters
    c: np.ndarray
    v: np.ndarray
    oi: np.ndarray | None

    @classmethod
    def empty(cls, with_oi: bool) -> Candles:
        f, i = np.empty(0), np.empty(0, dtype=np.int64)
        return cls(f, f, f, f, f, i, i if with_oi else None)

    def __len__(self) -> int:
        return len(self.t)

    def take(self, index: np.ndarray) -> Candles:
        return Candles(self.t[index], self.o[index], self.h[index], self.l[index], self.c[index],
                       self.v[index], None if self.oi is None else self.oi[index])

    def between(self, lo: float, hi: float) -> Candles:
        return self.take((self.t >= lo) & (self.t <= hi))

    @classmethod
    def concat(cls, parts: list[Candles]) -> Candles:
        with_oi = all(p.oi is not None for p in parts) and bool(parts)
        if not parts:
            return cls.empty(False)
        t, o, h, low, c, v = (np.concatenate([getattr(p, k) for p in parts]) for k in "tohlcv")
        oi = np.concatenate([p.oi for p in parts if p.oi is not None]) if with_oi else None
        return cls(t, o, h, low, c, v, oi)

    # --- storage form ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, list]:
        doc = {k: getattr(self, k).tolist() for k in "tohlcv"}
        if self.oi is not None:
            doc["oi"] = self.oi.tolist()
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, list]) -> Candles:
        t, o, h, low, c = (np.asarray(doc[k], dtype=np.float64) for k in "tohlc")
        oi = np.asarray(doc["oi"], dtype=np.int64) if "oi" in doc else None
        return cls(t, o, h, low, c, np.asarray(doc["v"], dtype=np.int64), oi)

    def rows(self) -> list[list[Any]]:
        """Kite-like rows: [ISO time in IST, open, high, low, close, volume(, oi)]."""
        stamps = np.datetime_as_string((self.t + IST_OFFSET).astype(np.int64).astype("datetime64[s]"))
        cols = [[f"{s}+05:30" for s in stamps], self.o.tolist(), self.h.tolist(), self.l.tolist(),
                self.c.tolist(), self.v.tolist()]
        if self.oi is not None:
            cols.append(self.oi.tolist())
        return [list(r) for r in zip(*cols, strict=True)]


def _epochs(stamps: Sequence[datetime]) -> np.ndarray:
    """Epoch seconds of candle times; one without a zone counts as UTC, as `parse_stamps` reads it."""
    if any(stamp.tzinfo is None for stamp in stamps):
        stamps = [stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC) for stamp in stamps]
    return np.array([stamp.timestamp() for stamp in stamps], dtype=np.float64)


def parse_candles(raw: Sequence[Candle], with_oi: bool, first: date, last: date) -> dict[date, Candles]:
    """Kite's candles for days first..last, split per IST day (days without candles map to empty)."""
    out = {first + timedelta(days=i): Candles.empty(with_oi) for i in range((last - first).days + 1)}
    if not raw:
        return out
    if with_oi and any(r.oi is None for r in raw):
        raise ValueError("Kite sent candles without open interest although oi was requested")
    stamps, o, h, lo, c, v, oi = zip(*raw, strict=True)  # rows to columns in one pass
    t = _epochs(stamps)
    f = np.float64
    whole = Candles(t, np.array(o, f), np.array(h, f), np.array(lo, f), np.array(c, f), np.array(v, np.int64),
                    np.array(oi, np.int64) if with_oi else None)
    whole = whole.take(np.argsort(t, kind="stable"))
    day_numbers = ist_days(whole.t)
    for number in np.unique(day_numbers):
        d = _EPOCH_DAY + timedelta(days=int(number))
        if d in out:  # a candle outside the asked days is not ours to cache
            out[d] = whole.take(day_numbers == number)
    return out


class HistoryStore:
    """history_cache rows: (token, interval, oi, continuous, day) -> that day's candles."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def load(self, token: int, interval: str, oi: bool, continuous: bool,
                   days: list[date]) -> dict[date, Candles]:
        rows = await self.pool.fetch(
            "SELECT day, candles FROM history_cache WHERE instrument_token = $1 AND candle_interval = $2"
            " AND oi = $3 AND continuous = $4 AND day = ANY($5::date[])", token, interval, oi, continuous, days)
        return {r["day"]: Candles.from_json(r["candles"]) for r in rows}

    async def save(self, token: int, interval: str, oi: bool, continuous: bool,
                   per_day: dict[date, Candles]) -> None:
        if not per_day:
            return
        await self.pool.executemany(
            "INSERT INTO history_cache (instrument_token, candle_interval, oi, continuous, day, candles)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (instrument_token, candle_interval, oi, continuous, day)"
            " DO UPDATE SET candles = EXCLUDED.candles, fetched_at = now()",
            [(token, interval, oi, continuous, d, c.to_json()) for d, c in per_day.items()])
