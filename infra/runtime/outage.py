"""Riding through a dependency's outage: log once, back off with jitter, say when it is back.

A process that loses Redis or PostgreSQL must neither die nor flood its log with one line per retry.
`Outage` is the one place that decides how long to wait before the next try (`jittered`: capped
exponential back-off, uniform in the upper half of the step, so replicas and the parts of one
process do not reconnect in lock-step) and what to log: one warning when the dependency first
fails, one line when it works again with how long it was gone. Health handlers read `down` /
`reason` / `doc()`; the `ticker_dependency_up` gauge says the same to Prometheus, and `on_change`
tells a room's own metrics.

Attempts may be stamped (`now()`): the success of an attempt begun before the outage was noticed
proves nothing (its reply may have been read from a socket's buffer after the server died), so it
cannot end one; a failure on a socket opened before the last outage ended is that outage's leftover
(a connection held across a restart dies on its next use), so it cannot start a new one.

What is said is the room's (`Wording`); the streamer, the web and the workers word it their way.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.exceptions
from prometheus_client import Gauge

from ticker.core.backoff import jittered

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


@dataclass(frozen=True, slots=True)
class Wording:
    """The two lines an outage costs. `down` may use dependency, doing, while_doing, error,
    reason, detail; `up` dependency, doing, while_doing, seconds, failures, down_for."""

    down: str = "{dependency} unreachable{while_doing} ({error}); retrying in the background until it is back"
    up: str = "{dependency} reachable again after {seconds:.1f} s ({failures} failed tries)"
    up_level: int = logging.INFO
    detail: bool = False  # the error's own text as a log field (driver messages may name hosts)


class Outage:
    """The state of one dependency as seen by one process (e.g. `Outage("redis")`)."""

    def __init__(self, dependency: str, *, first_delay: float = 0.05, max_delay: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 logger: logging.Logger = log, wording: Wording = Wording(),
                 describe: Callable[[BaseException], str] | None = None,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.dependency = dependency
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._clock = clock
        self._rng = rng or random.Random()
        self._log, self._wording, self._describe, self._on_change = logger, wording, describe, on_change
        self._since: float | None = None  # clock time the current outage was noticed
        self.up_since = clock()  # when the last outage ended (or this was made)
        self.down_since_wall: float | None = None  # time.time() of the same moment, for people
        self._failures = 0  # failed tries in the current outage (the back-off's step)
        self.reason: str | None = None
        self.outages = 0
        self.failing: dict[str, str] = {}  # what was being done -> its last error, during this outage
        self.failures: Counter[str] = Counter()  # failed tries per activity, ever (bounded by the activities)
        DEPENDENCY_UP.labels(dependency).set(1)

    @property
    def down(self) -> bool:
        return self._since is not None

    @property
    def down_since(self) -> float | None:
        return self._since

    def now(self) -> float:
        """The clock attempts are stamped with (pass it back as `since` / `began`)."""
        return self._clock()

    def seconds_down(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since

    def failed(self, exc: BaseException, doing: str = "", *, since: float | None = None) -> float:
        """Record a failed try; return how long to wait before the next one. `since`: when the
        socket it used was opened, or when the try began, if known."""
        self.failures[doing] += 1
        self._failures += 1
        if self._since is None and since is not None and since < self.up_since:
            return self.next_delay()  # a leftover of the last outage
        self.failing[doing] = type(exc).__name__
        if self._since is not None:
            return self.next_delay()
        self._since, self.down_since_wall = self._clock(), time.time()
        self.outages += 1
        self.reason = self._describe(exc) if self._describe else f"{self.dependency} unreachable: {type(exc).__name__}"
        DEPENDENCY_UP.labels(self.dependency).set(0)
        self._say(self._wording.down, logging.WARNING, doing=doing, error=type(exc).__name__,
                  reason=self.reason, detail=str(exc)[:200] if self._wording.detail else "")
        if self._on_change is not None:
            self._on_change(False)
        return self.next_delay()

    def next_delay(self) -> float:
        return jittered(max(self._failures, 1), self.first_delay, self.max_delay, self._rng)

    def ok(self, began: float | None = None, doing: str = "") -> None:
        """Record a successful call (begun at `began`, from `now()`, if known); logs once when this
        ends an outage."""
        if self._since is None:
            self._failures = 0
            return
        if began is not None and began < self._since:
            return  # begun before the outage was noticed: proves nothing
        self.up_since = self._clock()
        gone, failures, failing = self.up_since - self._since, self._failures, sorted(self.failing)
        self._since, self.down_since_wall, self._failures, self.reason, self.failing = None, None, 0, None, {}
        DEPENDENCY_UP.labels(self.dependency).set(1)
        self._say(self._wording.up, self._wording.up_level, doing=doing, seconds=gone, failures=failures,
                  down_for=round(gone, 2), failed_parts=failing)
        if self._on_change is not None:
            self._on_change(True)

    def doc(self) -> dict[str, Any]:
        """The outage for a health document (empty when the dependency is up)."""
        if self.down_since_wall is None:
            return {}
        return {"reason": self.reason,
                "down_since": datetime.fromtimestamp(self.down_since_wall, UTC).isoformat()}

    def _say(self, template: str, level: int, doing: str, **fields: Any) -> None:
        text = template.format(dependency=self.dependency, doing=doing,
                               while_doing=f" while {doing}" if doing else "", **fields)
        extra = {k: v for k, v in {"dependency": self.dependency, "part": doing, **fields}.items()
                 if k in ("dependency", "part", "error", "detail", "down_for", "failed_parts") and v not in ("", None)}
        self._log.log(level, text, extra=extra)
