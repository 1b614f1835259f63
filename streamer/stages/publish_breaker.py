"""A circuit breaker for the Redis publisher.

Closed: every flush is tried. After `threshold` consecutive failures it opens: flushes are dropped
(and counted by the caller) without touching Redis, so a dead Redis costs nothing per flush.
Once the open period has passed one flush is let through as a probe (half-open): success closes
the breaker, failure opens it again for a longer period. Periods grow with jitter from
`reset_seconds / 8` and are capped at `reset_seconds`, so a blip costs a fraction of a second and a
long outage costs one probe per `reset_seconds` at most, and Redis is found again at most that
long after it is back.
"""

from __future__ import annotations

import time
from typing import Literal

from ticker.streamer.redis_link import jittered

State = Literal["closed", "open", "half_open"]
STATE_CODES: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}
FIRST_PERIOD_SHARE = 1 / 8  # of reset_seconds: the first open period's ceiling


class PublishBreaker:
    def __init__(self, reset_seconds: float, threshold: int = 1, clock=time.monotonic) -> None:
        self.reset_seconds = reset_seconds
        self.threshold = threshold
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._open_for = 0.0
        self._reopened = 0  # failed probes since the breaker last closed
        self.trips = 0

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self._open_for else "open"

    def allow(self) -> bool:
        """May the next flush go to Redis? (True when closed, or when a probe is due.)"""
        return self.state != "open"

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._reopened = 0

    def failure(self) -> None:
        self._failures += 1
        if self._opened_at is None and self._failures < self.threshold:
            return
        if self._opened_at is None:
            self.trips += 1
        else:
            self._reopened += 1
        self._opened_at = self._clock()
        self._open_for = jittered(self._reopened, self.reset_seconds * FIRST_PERIOD_SHARE, self.reset_seconds)
