"""The streamer's process surface: `/health` (JSON) and `/metrics` (Prometheus) on STREAMER_PORT,
plus the backpressure level reported in `/health`.

Backpressure follows the earlier system's four levels, from the published-to-received ratio over
the last seconds and how full the tick buffer is (whichever is worse):
healthy, warning (ratio < 0.95 or fill >= 80%), critical (< 0.8 or >= 95%), overload (< 0.5 or >= 99%).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from aiohttp import web
from prometheus_client import CollectorRegistry

from ticker.infra.metrics import metrics_handler

Level = Literal["healthy", "warning", "critical", "overload"]
_LEVELS: tuple[tuple[Level, float, float], ...] = (  # level, ratio below, fill at or above
    ("overload", 0.5, 0.99),
    ("critical", 0.8, 0.95),
    ("warning", 0.95, 0.8),
)


def classify(ratio: float, fill: float) -> Level:
    for level, ratio_below, fill_at in _LEVELS:
        if ratio < ratio_below or fill >= fill_at:
            return level
    return "healthy"


class Backpressure:
    """Rates over a sliding window of samples (one per second from the monitor loop)."""

    def __init__(self, window_samples: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=window_samples + 1)
        self._clock = clock

    def sample(self, received_total: int, published_total: int) -> None:
        """Cumulative counts; `published_total` may include ticks still on their way (buffered)."""
        self._samples.append((self._clock(), received_total, published_total))

    def report(self, fill: float) -> dict:
        received = published = 0
        span = 0.0
        if len(self._samples) >= 2:
            (t0, r0, p0), (t1, r1, p1) = self._samples[0], self._samples[-1]
            received, published, span = r1 - r0, p1 - p0, t1 - t0
        ratio = min(1.0, published / received) if received else 1.0
        return {
            "level": classify(ratio, fill),
            "published_to_received": round(ratio, 4),
            "buffer_fill": round(fill, 4),
            "received_per_second": round(received / span, 1) if span else 0.0,
            "published_per_second": round(published / span, 1) if span else 0.0,
        }


def build_app(health: Callable[[], tuple[int, dict]], registry: CollectorRegistry) -> web.Application:
    async def handle_health(_request: web.Request) -> web.Response:
        status, doc = health()
        return web.json_response(doc, status=status)

    app = web.Application()
    app.router.add_get("/health", handle_health)
    app.router.add_get("/metrics", metrics_handler(registry))
    return app
