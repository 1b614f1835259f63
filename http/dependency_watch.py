"""Redis and PostgreSQL outages as this web replica sees them (each an `Outage` of
ticker.infra.runtime.outage, worded for the web and started and ended by probes).

A request that fails because Redis or PostgreSQL is out of reach answers 503 and only *suspects*
an outage: one failed request proves little (a stale pooled connection after a restart, a client
that hung up mid-body). The watcher then probes the dependency; a failed probe (or a failed
`/health` check) starts an outage: one warning, the `ticker_http_dependency_up` gauge at 0. While
an outage lasts the watcher probes every `RECHECK_SECONDS` and ends it on the first success: one
more line, saying how long it lasted. So a thousand failing requests log two lines, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from asyncpg.exceptions import InterfaceError, PostgresError
from redis.exceptions import RedisError

from ticker.infra.runtime.outage import Outage, Wording

log = logging.getLogger("ticker.http.dependency_watch")

REDIS, POSTGRES = "redis", "postgres"
TICK_REDIS = "tick_redis"  # the tick bus, probed on its own only when TICK_REDIS_URL names another Redis
RECHECK_SECONDS = 0.25
PROBE_TIMEOUT = 2.0

Probe = Callable[[], Awaitable[Any]]


def dependencies_of(exc: BaseException) -> tuple[str, ...]:
    """Which dependency a failure points at; a bare socket error could be either."""
    if isinstance(exc, RedisError):
        return (REDIS,)
    if isinstance(exc, PostgresError | InterfaceError):
        return (POSTGRES,)
    return (REDIS, POSTGRES)


def reason_of(exc: BaseException) -> str:
    """A short, host-free account of a failure (driver messages name internal hosts and ports)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e).lower() for e in chain)
    # a unix socket that is not there is a server that is not listening: refused, as over TCP
    if any(isinstance(e, ConnectionRefusedError | FileNotFoundError) for e in chain) or "refused" in text:
        return "connection refused"
    if any(isinstance(e, ConnectionResetError) for e in chain) or "reset by peer" in text:
        return "connection reset"
    if any(isinstance(e, TimeoutError) for e in chain) or "timeout" in text or "timed out" in text:
        return "timed out"
    if "closed" in text or "shutdown" in text or "shutting down" in text:
        return "connection closed by the server"
    return type(exc).__name__


WORDING = Wording(down="{dependency} unavailable ({reason}): requests that need it get 503 until it is back",
                  up="{dependency} is back after {seconds:.1f} s", up_level=logging.WARNING)


class Outages:
    """One `Outage` per probed dependency (the logic: ticker.infra.runtime.outage), and the
    watcher that decides, by probing, when one starts and ends."""

    def __init__(self, probes: dict[str, Probe], on_change: Callable[[str, bool], None] | None = None) -> None:
        self.probes = probes
        self.on_change = on_change
        self.tracked: dict[str, Outage] = {}
        for dependency in probes:
            self._tracker(dependency)
        self._suspects: set[str] = set()
        self._wake = asyncio.Event()
        self._back: dict[str, asyncio.Event] = {}  # set when an outage of that dependency ends
        self._task: asyncio.Task | None = None

    @property
    def current(self) -> dict[str, Outage]:
        """The dependencies down now."""
        return {d: outage for d, outage in self.tracked.items() if outage.down}

    def _tracker(self, dependency: str) -> Outage:
        outage = self.tracked.get(dependency)
        if outage is None:
            def told(up: bool) -> None:
                if self.on_change:
                    self.on_change(dependency, up)
            outage = self.tracked[dependency] = Outage(dependency, logger=log, wording=WORDING,
                                                       describe=reason_of, on_change=told)
        return outage

    # --- evidence ---------------------------------------------------------------------------------
    def suspect(self, exc: BaseException) -> None:
        """A request failed in a way that may mean an outage: have the watcher look now."""
        named = set(dependencies_of(exc))
        if REDIS in named:  # a Redis error does not say which Redis: the watcher probes both
            named.add(TICK_REDIS)
        fresh = named & set(self.probes) - self._suspects - set(self.current)
        if fresh:
            self._suspects |= fresh
            self._wake.set()

    def look(self) -> None:
        """Have the watcher probe every dependency now (at startup: an outage already under way is
        reported at once, not at the first request)."""
        self._suspects |= set(self.probes)
        self._wake.set()

    def failed(self, dependency: str, exc: BaseException) -> None:
        """A probe of `dependency` failed: the outage begins (or goes on)."""
        outage = self._tracker(dependency)
        if outage.down:
            return
        outage.failed(exc)
        self._back_event(dependency).clear()
        self._wake.set()

    def succeeded(self, dependency: str) -> None:
        """A probe of `dependency` answered: any outage is over."""
        outage = self.tracked.get(dependency)
        if outage is None or not outage.down:
            return
        outage.ok()
        self._back_event(dependency).set()

    def _back_event(self, dependency: str) -> asyncio.Event:
        return self._back.setdefault(dependency, asyncio.Event())

    async def pause(self, dependency: str, seconds: float) -> None:
        """Sleep `seconds` before retrying `dependency`, or less if an outage of it ends meanwhile:
        whoever retries on a timer reconnects as soon as the watcher sees the server back."""
        if dependency not in self.current:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._back_event(dependency).wait()

    # --- the watcher ------------------------------------------------------------------------------
    async def probe(self, dependency: str) -> bool:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self.probes[dependency]()
        except Exception as exc:  # any failure of a probe is a finding
            self.failed(dependency, exc)
            return False
        self.succeeded(dependency)
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="outage-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            if self.current:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECHECK_SECONDS):
                        await self._wake.wait()
            else:
                await self._wake.wait()
            self._wake.clear()
            due = (set(self.current) | self._suspects) & set(self.probes)
            await asyncio.gather(*(self.probe(d) for d in due))
            self._suspects -= due


OUTAGES = web.AppKey("outages", Outages)
