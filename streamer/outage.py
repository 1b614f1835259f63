"""Redis as the streamer's parts see it, told once per outage; and the back-off they retry with.

Every part that talks to Redis (publisher, control listener, leases, heartbeat) tells
`RedisLink` how each attempt went; token-refresh reports wait while it says Redis is down. The first failure after a working spell starts
an outage and is logged; retries during it log nothing; the first success of an attempt begun
after the outage was noticed ends it, logged once more. An attempt begun earlier proves nothing
(its reply may have been read from a socket's buffer after Redis died), so it cannot end one; and
a failure on a socket opened before the last outage ended is that outage's leftover (a
connection held across a restart dies on its next use), so it cannot start a new one.
While an outage lasts `/health` says `degraded` with `reason()`; the Kite sockets stay up and
every part retries on its own with `jittered` back-off.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from ticker.core.backoff import jittered

log = logging.getLogger(__name__)
__all__ = ["RedisLink", "jittered"]  # jittered lives in core; the streamer's parts import it here


class RedisLink:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self._clock = clock
        self._on_change = on_change  # told True when an outage ends, False when one starts
        self.down_since: float | None = None  # monotonic time the current outage was noticed
        self.up_since = clock()  # when the last outage ended (or the link was made)
        self.outages = 0
        self.failing: dict[str, str] = {}  # part -> its last error during this outage
        self.failures: Counter[str] = Counter()  # failed attempts per part, ever (bounded by the parts)

    @property
    def up(self) -> bool:
        return self.down_since is None

    def now(self) -> float:
        """The clock attempts are stamped with (pass it back to `ok`)."""
        return self._clock()

    def failed(self, part: str, exc: BaseException, since: float | None = None) -> None:
        """An attempt of `part` failed; `since` is when the socket it used was opened, or when the
        attempt began (from `now()`), if known."""
        self.failures[part] += 1
        if self.down_since is None and since is not None and since < self.up_since:
            return  # a leftover of the last outage
        self.failing[part] = type(exc).__name__
        if self.down_since is not None:
            return
        self.down_since = self._clock()
        self.outages += 1
        log.warning("Redis unreachable; streaming on and retrying with back-off until it is back",
                    extra={"part": part, "error": type(exc).__name__, "detail": str(exc)[:200]})
        if self._on_change is not None:
            self._on_change(False)

    def ok(self, part: str, began: float) -> None:
        """A Redis round trip of `part` that began at `began` (from `now()`) succeeded."""
        if self.down_since is None or began < self.down_since:
            return
        self.up_since = self._clock()
        down_for = self.up_since - self.down_since
        self.down_since = None
        failing, self.failing = self.failing, {}
        log.info("Redis reachable again", extra={"part": part, "down_for": round(down_for, 2),
                                                 "failed_parts": sorted(failing)})
        if self._on_change is not None:
            self._on_change(True)

    def reason(self) -> str | None:
        if self.down_since is None:
            return None
        parts = ", ".join(f"{part}: {error}" for part, error in sorted(self.failing.items()))
        return f"Redis unreachable for {self._clock() - self.down_since:.1f} s ({parts})"
