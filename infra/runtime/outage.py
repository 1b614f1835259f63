"""Riding through a dependency's outage: log once, back off with jitter, say when it is back.

A process that loses Redis or PostgreSQL must neither die nor flood its log with one line per retry.
`Outage` is the one place that decides how long to wait before the next try (capped exponential
back-off with full jitter, so replicas do not reconnect in lock-step) and what to log: one warning
when the dependency first fails, one line when it works again with how long it was gone. Health
handlers read `down` / `reason`; the `ticker_dependency_up` gauge says the same to Prometheus.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import asyncpg
import redis.exceptions
from prometheus_client import Gauge

log = logging.getLogger(__name__)

# What a lost Redis looks like from a client: refused, reset, timed out, closed under us, still
# loading its append-only file (BusyLoadingError is a ConnectionError). redis-py also reports a
# connection lost during WATCH as a WatchError; arq handles the contention kind itself, so one that
# reaches us means the connection went.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.WatchError)
# PostgreSQL refused, restarting, or a pooled connection closed under us.
POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)

DEPENDENCY_UP = Gauge(
    "ticker_dependency_up", "1 while this process reaches the dependency, 0 during an outage",
    ["dependency"],
)


class Outage:
    """The state of one dependency as seen by one process (e.g. `Outage("redis")`)."""

    def __init__(self, dependency: str, *, first_delay: float = 0.05, max_delay: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.dependency = dependency
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._clock = clock
        self._rng = rng or random.Random()
        self._since: float | None = None
        self._failures = 0
        self.reason: str | None = None
        self.outages = 0
        DEPENDENCY_UP.labels(dependency).set(1)

    @property
    def down(self) -> bool:
        return self._since is not None

    def seconds_down(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since

    def failed(self, exc: BaseException, doing: str = "") -> float:
        """Record a failed try; return how long to wait before the next one."""
        self._failures += 1
        self.reason = f"{self.dependency} unreachable: {type(exc).__name__}"
        if self._since is None:
            self._since = self._clock()
            self.outages += 1
            DEPENDENCY_UP.labels(self.dependency).set(0)
            what = f" while {doing}" if doing else ""
            log.warning("%s unreachable%s (%s); retrying in the background until it is back",
                        self.dependency, what, type(exc).__name__)
        return self.next_delay()

    def next_delay(self) -> float:
        ceiling = min(self.max_delay, self.first_delay * 2 ** min(self._failures, 16))
        return self._rng.uniform(self.first_delay, max(self.first_delay, ceiling))

    def ok(self) -> None:
        """Record a successful call; logs once when this ends an outage."""
        if self._since is None:
            return
        gone = self._clock() - self._since
        log.info("%s reachable again after %.1f s (%d failed tries)", self.dependency, gone, self._failures)
        self._since, self._failures, self.reason = None, 0, None
        DEPENDENCY_UP.labels(self.dependency).set(1)
