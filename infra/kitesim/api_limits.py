"""Kite's per-user API rate limits (2026), counted per Kite user behind the access token.

Buckets and their windows (Kite's documented limits; each can be changed or switched off):

    orders      POST /orders/{variety}     10 in any one second, 400 in any 60 s, 5,000 per IST day
    quote       GET /quote, /quote/ltp, /quote/ohlc          1 in any one second
    historical  GET /instruments/historical/...              3 in any one second
    api         every other authenticated endpoint           10 in any one second

A request beyond any window is answered 429 NetworkException "Too many requests" and does not count.
Windows are sliding logs ("in any one second", the strict reading) except the daily one, which is a
count per IST calendar day. Memory is bounded: a log holds at most `limit` times per user.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ticker.core.clock import IST

BUCKETS = ("orders", "quote", "historical", "api")
_ROUTE_BUCKETS = {
    "POST /orders/{variety}": "orders",
    "GET /quote": "quote",
    "GET /quote/ltp": "quote",
    "GET /quote/ohlc": "quote",
    "GET /instruments/historical/{token}/{interval}": "historical",
}


def bucket_of(route_key: str) -> str:
    """The limit bucket of a 'METHOD /template' route key."""
    return _ROUTE_BUCKETS.get(route_key, "api")


class SlidingLimit:
    """At most `limit` admissions per key in any `period`-second span; 0 disables."""

    def __init__(self, limit: int, period: float = 1.0) -> None:
        self.limit = limit
        self.period = period
        self._times: dict[str, deque[float]] = {}

    @property
    def per_second(self) -> int:  # the name the admin API has always shown for the order limit
        return self.limit

    def set(self, limit: int) -> None:
        self.limit = limit
        self._times.clear()

    def room(self, key: str, now: float) -> bool:
        if self.limit <= 0:
            return True
        window = self._times.get(key)
        return window is None or len(window) < self.limit or now - window[0] >= self.period

    def take(self, key: str, now: float) -> None:
        if self.limit > 0:
            self._times.setdefault(key, deque(maxlen=self.limit)).append(now)

    def admit(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if not self.room(key, now):
            return False
        self.take(key, now)
        return True


class DailyLimit:
    """At most `limit` admissions per key per IST calendar day; 0 disables."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._days: dict[str, tuple[str, int]] = {}

    def set(self, limit: int) -> None:
        self.limit = limit
        self._days.clear()

    def _count(self, key: str, day: str) -> int:
        seen = self._days.get(key)
        return seen[1] if seen and seen[0] == day else 0

    def room(self, key: str, wall: float) -> bool:
        return self.limit <= 0 or self._count(key, _ist_day(wall)) < self.limit

    def take(self, key: str, wall: float) -> None:
        day = _ist_day(wall)
        self._days[key] = (day, self._count(key, day) + 1)


def _ist_day(wall: float) -> str:
    return datetime.fromtimestamp(wall, IST).strftime("%Y-%m-%d")


@dataclass
class LimitSettings:
    """Every limit; 0 switches one window off, `enabled=False` all of them."""

    enabled: bool = True
    orders_per_second: int = 10
    orders_per_minute: int = 400
    orders_per_day: int = 5000
    quote_per_second: int = 1
    historical_per_second: int = 3
    api_per_second: int = 10


@dataclass
class RateLimits:
    settings: LimitSettings = field(default_factory=LimitSettings)
    # Time sources; a test may pin them to put every request in one window.
    mono: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.configure(self.settings)

    def configure(self, settings: LimitSettings) -> None:
        """Apply new limits; every window starts empty."""
        self.settings = settings
        s = settings
        self.orders = SlidingLimit(s.orders_per_second)
        self.windows: dict[str, list[SlidingLimit]] = {
            "orders": [self.orders, SlidingLimit(s.orders_per_minute, 60.0)],
            "quote": [SlidingLimit(s.quote_per_second)],
            "historical": [SlidingLimit(s.historical_per_second)],
            "api": [SlidingLimit(s.api_per_second)],
        }
        self.orders_daily = DailyLimit(s.orders_per_day)

    def admit(self, user_id: str, bucket: str, mono: float | None = None, wall: float | None = None) -> bool:
        """Count one request of `user_id` in `bucket` if every window has room; False = a 429."""
        if not self.settings.enabled:
            return True
        mono = self.mono() if mono is None else mono
        wall = self.wall() if wall is None else wall
        windows = self.windows[bucket]
        daily = self.orders_daily if bucket == "orders" else None
        if not all(w.room(user_id, mono) for w in windows) or (daily and not daily.room(user_id, wall)):
            return False
        for w in windows:
            w.take(user_id, mono)
        if daily:
            daily.take(user_id, wall)
        return True

    def describe(self) -> dict:
        return dict(self.settings.__dict__)
