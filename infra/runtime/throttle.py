"""Log lines that cannot flood: a kind of event is logged at most once per period.

A corrupt feed or a failing stage repeats its event every frame or every batch; one line a minute
(with how many were held back) says as much, and keeps the log readable and cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PERIOD_SECONDS = 60.0
MAX_KINDS = 1000


class Throttle:
    def __init__(self, period: float = PERIOD_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, kind: str) -> int | None:
        """None when this kind was logged within the period (the event is tallied); else how many
        events of the kind were held back since its last line (the caller logs now)."""
        now = self._clock()
        if now - self._last.get(kind, -self.period) < self.period:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        if len(self._last) >= MAX_KINDS:  # bounded: kinds may carry an account id
            self._last.clear()
            self._held.clear()
        self._last[kind] = now
        return self._held.pop(kind, 0)
