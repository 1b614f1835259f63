"""The rates and backpressure level the streamer reports in `/health`.

Rates come from the tick counters themselves over a sliding window of the last RATE_WINDOW
seconds (sampled once a second and again at every report), so they fall to zero as soon as
publishing stops and come back as soon as it resumes. Backpressure follows the earlier system's
four levels, from the handled-to-received ratio over that window and how full the tick buffer is
(whichever is worse): healthy, warning (ratio < 0.95 or fill >= 80%), critical (< 0.8 or >= 95%),
overload (< 0.5 or >= 99%). "Handled" is published plus dropped for its content (malformed, unknown
token), plus what is still on its way (buffered or in a flush) as long as the pipeline moves:
once ticks have come in and nothing was handled for STALL_SECONDS, the backlog earns no credit
and the report says how long publishing has stalled (the streamer then reports `degraded`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal, NamedTuple

Level = Literal["healthy", "warning", "critical", "overload"]
_LEVELS: tuple[tuple[Level, float, float], ...] = (  # level, ratio below, fill at or above
    ("overload", 0.5, 0.99),
    ("critical", 0.8, 0.95),
    ("warning", 0.95, 0.8),
)
RATE_WINDOW = 3.0  # seconds the per-second rates and the ratio are measured over
STALL_SECONDS = 5.0  # ticks in, nothing handled for this long: publishing has stalled
MAX_SAMPLES = 1000  # reports may sample often; the window needs only a few


def classify(ratio: float, fill: float) -> Level:
    for level, ratio_below, fill_at in _LEVELS:
        if ratio < ratio_below or fill >= fill_at:
            return level
    return "healthy"


class Sample(NamedTuple):
    at: float
    received: int
    published: int
    handled: int  # published + dropped for content
    backlog: int  # buffered or in a flush at that moment


class Backpressure:
    def __init__(self, window: float = RATE_WINDOW, stall: float = STALL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.stall = stall
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        self._moved_at = clock()  # when `handled` last grew (or the streamer started)
        self._received_then = 0  # the received count at that moment

    def sample(self, received_total: int, published_total: int, rejected_total: int = 0, backlog: int = 0) -> None:
        """Cumulative counts: ticks decoded, published, dropped for their content; `backlog` is
        how many are buffered or in a flush right now."""
        now = self._clock()
        handled = published_total + rejected_total
        if not self._samples or handled != self._samples[-1].handled:
            self._moved_at, self._received_then = now, received_total
        self._samples.append(Sample(now, received_total, published_total, handled, backlog))
        while len(self._samples) > 2 and self._samples[1].at <= now - self.window:
            self._samples.popleft()  # keep one sample at or before the window's start

    def stalled_for(self) -> float:
        """Seconds since anything was handled while ticks kept coming in; 0 when moving or idle."""
        if not self._samples or self._samples[-1].received == self._received_then:
            return 0.0
        return max(0.0, self._clock() - self._moved_at)

    def report(self, fill: float) -> dict:
        received = published = handled = on_way = 0
        span = 0.0
        if len(self._samples) >= 2:
            first, last = self._samples[0], self._samples[-1]
            received, published = last.received - first.received, last.published - first.published
            handled, on_way = last.handled - first.handled, last.backlog - first.backlog
            span = last.at - first.at
        stalled = self.stalled_for()
        if stalled < self.stall:
            handled += on_way  # late, not lost, while the pipeline moves
        ratio = min(1.0, handled / received) if received else 1.0
        return {
            "level": classify(ratio, fill),
            "published_to_received": round(ratio, 4),
            "buffer_fill": round(fill, 4),
            "received_per_second": round(received / span, 1) if span else 0.0,
            "published_per_second": round(published / span, 1) if span else 0.0,
            "window_seconds": round(span, 2),
            "stalled_seconds": round(stalled, 1),
        }
