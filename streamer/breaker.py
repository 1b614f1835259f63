"""A circuit breaker for the Redis publisher.

Closed: every flush is tried. After `threshold` consecutive failures it opens: flushes are dropped
(and counted by the caller) without touching Redis, so a dead Redis costs nothing per flush.
After `reset_seconds` one flush is let through as a probe (half-open): success closes the breaker,
failure opens it for another period.
"""

from __future__ import annotations

import time
from typing import Literal

State = Literal["closed", "open", "half_open"]
STATE_CODES: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}


class CircuitBreaker:
    def __init__(self, reset_seconds: float, threshold: int = 1, clock=time.monotonic) -> None:
        self.reset_seconds = reset_seconds
        self.threshold = threshold
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self.trips = 0

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.reset_seconds else "open"

    def allow(self) -> bool:
        """May the next flush go to Redis? (True when closed, or when a probe is due.)"""
        return self.state != "open"

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.threshold:
            if self._opened_at is None:
                self.trips += 1
            self._opened_at = self._clock()
