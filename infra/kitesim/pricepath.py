"""A deterministic price path for each underlying: a pure function of (seed, name, timestamp).

Each trading day (weekdays that are not NSE holidays, see core.holidays) has a level from a few seeded slow waves plus daily noise, and an
intraday path at 15-second resolution drawn as a Brownian bridge from the day's open to its close,
from a generator seeded by (seed, name, date). History candles and the live market's starting
price both read it, so any range of history can be asked for in any order and always agrees.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from datetime import date, datetime, time

import numpy as np

from ticker.core.clock import IST, is_trading_day, previous_trading_day

SESSION_OPEN = time(9, 15)
SESSION_MINUTES = 375            # 09:15 .. 15:30
STEP_SECONDS = 15
STEPS_PER_MINUTE = 60 // STEP_SECONDS
STEPS = SESSION_MINUTES * STEPS_PER_MINUTE
TRADING_DAYS = 252
_CACHE_DAYS = 512


def session_open_epoch(d: date) -> float:
    return datetime.combine(d, SESSION_OPEN, IST).timestamp()


def is_session_day(d: date) -> bool:
    """A day NSE trades (weekday, not a holiday in NSE's calendar)."""
    return is_trading_day(d)


def previous_session_day(d: date) -> date:
    return previous_trading_day(d)


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big")


class PricePath:
    """Underlying levels for any timestamp; bounded cache of recently used days."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._days: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._waves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _wave(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if name not in self._waves:
            g = np.random.default_rng([self.seed, _name_key(name), 0xA5])
            periods = np.array([23.0, 71.0, 199.0, 617.0]) * g.uniform(0.8, 1.25, 4)
            amps = np.array([0.015, 0.03, 0.05, 0.08]) * g.uniform(0.6, 1.4, 4)
            self._waves[name] = (periods, amps, g.uniform(0, 2 * math.pi, 4))
        return self._waves[name]

    def day_open(self, name: str, spot: float, d: date) -> float:
        """The day's opening level: slow waves around `spot` plus a little daily noise."""
        periods, amps, phases = self._wave(name)
        x = d.toordinal()
        g = np.random.default_rng([self.seed, _name_key(name), x, 1])
        log_level = float(np.sum(amps * np.sin(2 * math.pi * x / periods + phases)))
        return spot * math.exp(log_level + 0.004 * g.standard_normal())

    def day(self, name: str, spot: float, vol: float, d: date) -> np.ndarray:
        """STEPS+1 levels from 09:15 to 15:30 of one trading day (cached, read-only)."""
        key = (name, d.toordinal())
        cached = self._days.get(key)
        if cached is not None:
            self._days.move_to_end(key)
            return cached
        path = self._draw(name, spot, vol, d)
        self._days[key] = path
        if len(self._days) > _CACHE_DAYS:
            self._days.popitem(last=False)
        return path

    def _draw(self, name: str, spot: float, vol: float, d: date) -> np.ndarray:
        g = np.random.default_rng([self.seed, _name_key(name), d.toordinal(), 2])
        daily = vol / math.sqrt(TRADING_DAYS)
        log_open = math.log(self.day_open(name, spot, d))
        log_close = log_open + daily * 0.8 * g.standard_normal()
        steps = g.standard_normal(STEPS) * (daily / math.sqrt(STEPS))
        walk = np.concatenate(([0.0], np.cumsum(steps)))
        frac = np.linspace(0.0, 1.0, STEPS + 1)
        bridge = walk - frac * walk[-1]  # pinned to 0 at both ends
        path = np.exp(log_open + frac * (log_close - log_open) + bridge)
        path.setflags(write=False)
        return path

    def at(self, name: str, spot: float, vol: float, ts: float) -> float:
        """Level at an epoch timestamp: inside a session the path, outside it the last close."""
        dt = datetime.fromtimestamp(ts, IST)
        d = dt.date()
        if is_session_day(d):
            step = int((ts - session_open_epoch(d)) // STEP_SECONDS)
            if 0 <= step <= STEPS:
                return float(self.day(name, spot, vol, d)[step])
            if step > STEPS:
                return float(self.day(name, spot, vol, d)[-1])
        return float(self.day(name, spot, vol, previous_session_day(d))[-1])
