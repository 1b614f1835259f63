"""Keeping `ticker dev`'s processes up: restart what dies, give up only on a crash loop.

Everything `ticker dev` starts (the production processes, the stand-in, the embedded Redis and
PostgreSQL) is watched by one `ProcessSupervisor` task per process. When one exits without being asked to,
the supervisor says which and how it ended, waits a back-off that grows with its recent crashes, and
starts it again; the rest keep running and ride through the gap themselves. Only a crash loop
(`limit` exits within `window` seconds) ends the whole run. Exits are learned from the kernel
(a pidfd becomes readable when the process ends), not by polling, so this works for daemons that
are not our children, such as pgserver's postmaster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

CRASH_LIMIT = 5
CRASH_WINDOW_S = 60.0
MAX_BACKOFF_S = 10.0


class CrashLoop:
    """Recent exits of one process: how long to wait before the next start, and when to give up."""

    def __init__(self, limit: int = CRASH_LIMIT, window: float = CRASH_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._exits: deque[float] = deque(maxlen=limit)

    def record(self) -> bool:
        """Note one exit; True when it makes `limit` exits within the window (a crash loop)."""
        now = self._clock()
        self._exits.append(now)
        return len(self._exits) >= self.limit and now - self._exits[0] <= self.window

    def delay(self) -> float:
        recent = sum(1 for t in self._exits if self._clock() - t <= self.window)
        return min(MAX_BACKOFF_S, 0.5 * 2 ** max(0, recent - 1))


async def process_exit(pid: int) -> None:
    """Return when process `pid` has ended (any process, not only our children)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(fd, lambda: None if ended.done() else ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def how_it_ended(returncode: int | None) -> str:
    if returncode is None:
        return "exited"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Watched:
    """One supervised process: how to wait for its end, how to start it again."""

    name: str
    wait: Callable[[], Awaitable[int | None]]  # returns the exit code when known
    restart: Callable[[], Awaitable[None]]
    crashes: CrashLoop = field(default_factory=CrashLoop)


class ProcessSupervisor:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.stopping = False
        self.gave_up = asyncio.Event()
        self.reason = ""
        self._tasks: list[asyncio.Task] = []

    def watch(self, item: Watched) -> None:
        task = asyncio.create_task(self._keep_up(item), name=f"supervise-{item.name}")
        task.add_done_callback(self._owner_of(item))
        self._tasks.append(task)

    def _owner_of(self, item: Watched) -> Callable[[asyncio.Task], None]:
        def done(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                self._give_up(f"supervising {item.name} failed: {task.exception()!r}")
        return done

    def _give_up(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.gave_up.set()

    async def _keep_up(self, item: Watched) -> None:
        while True:
            code = await item.wait()
            if self.stopping:
                return
            if item.crashes.record():
                self._give_up(f"{item.name} {how_it_ended(code)}: {item.crashes.limit} exits within "
                              f"{item.crashes.window:.0f} s, a crash loop")
                return
            delay = item.crashes.delay()
            self.say(f"{item.name} {how_it_ended(code)}; restarting it in {delay:.1f} s")
            await asyncio.sleep(delay)
            if self.stopping:
                return
            try:
                await item.restart()
            except Exception as exc:  # a start that fails counts as another exit
                self.say(f"{item.name} did not start again: {exc}")
                continue
            self.say(f"{item.name} restarted")

    async def stop(self) -> None:
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
