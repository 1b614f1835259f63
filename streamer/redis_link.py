"""Redis as the streamer's parts see it: one shared `Outage`, told by part, worded for the streamer.

Every part that talks to Redis (publisher, control listener, leases, heartbeat) tells `RedisLink`
how each attempt went, stamped with `now()`; token-refresh reports wait while it says Redis is down.
The outage logic (logged once each way, stale successes and leftover failures ignored, the
`ticker_dependency_up` gauge, `jittered` back-off) is `ticker.infra.runtime.outage`'s. While an
outage lasts `/health` says `degraded` with `reason()`; the Kite sockets stay up and every part
retries on its own with `jittered` back-off.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from ticker.core.backoff import jittered
from ticker.infra.runtime.outage import Outage, Wording

__all__ = ["RedisLink", "jittered"]

log = logging.getLogger(__name__)

def wording(label: str) -> Wording:
    return Wording(down=f"{label} unreachable; streaming on and retrying with back-off until it is back",
                   up=f"{label} reachable again", detail=True)


class RedisLink:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[bool], None] | None = None, *,
                 dependency: str = "redis", label: str = "Redis") -> None:
        # on_change: told True when an outage ends, False when one starts. A tick bus on its own
        # Redis gets a link of its own: dependency "tick_redis", label "tick-bus Redis".
        self.label = label
        self.outage = Outage(dependency, clock=clock, logger=log, wording=wording(label), on_change=on_change)

    @property
    def up(self) -> bool:
        return not self.outage.down

    @property
    def down_since(self) -> float | None:
        return self.outage.down_since

    @property
    def outages(self) -> int:
        return self.outage.outages

    @property
    def failures(self) -> Counter[str]:
        return self.outage.failures

    def now(self) -> float:
        """The clock attempts are stamped with (pass it back to `ok`)."""
        return self.outage.now()

    def failed(self, part: str, exc: BaseException, since: float | None = None) -> None:
        """An attempt of `part` failed; `since` is when the socket it used was opened, or when the
        attempt began (from `now()`), if known."""
        self.outage.failed(exc, part, since=since)

    def ok(self, part: str, began: float) -> None:
        """A Redis round trip of `part` that began at `began` (from `now()`) succeeded."""
        self.outage.ok(began, part)

    def reason(self) -> str | None:
        if not self.outage.down:
            return None
        parts = ", ".join(f"{part}: {error}" for part, error in sorted(self.outage.failing.items()))
        return f"{self.label} unreachable for {self.outage.seconds_down():.1f} s ({parts})"
