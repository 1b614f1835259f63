"""Ownership of every background task: nothing is fire-and-forget.

`spawn` starts a task the supervisor holds until it ends and logs if it failed; `keep` runs a
long-lived loop that is restarted whenever it fails, counted and logged (at most once a minute per
loop): with exponential backoff by default, or at once for the pipeline's stages, whose next
batch must not wait behind a sleep; `close` cancels and awaits everything still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ticker.infra.runtime.throttle import Throttle

log = logging.getLogger(__name__)
CANCEL_GRACE_SECONDS = 2.0


class TaskSupervisor:
    def __init__(self, name: str = "streamer", on_restart: Callable[[str], None] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.name = name
        self._sleep = sleep  # the pause before a restart (tests observe it)
        self._tasks: dict[asyncio.Task, str] = {}
        self.failures = 0
        self._on_restart = on_restart  # told the loop's name on every restart (a metric)
        self._throttle = Throttle()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{self.name}:{name}")
        self._tasks[task] = name
        task.add_done_callback(self._finished)
        return task

    def keep(self, name: str, loop: Callable[[], Awaitable[Any]], *, max_backoff: float = 30.0,
             at_once: bool = False) -> asyncio.Task:
        """Run `loop()` for the life of the supervisor, restarting it after a failure: after a
        growing pause, or with `at_once` as soon as the event loop has had a turn."""
        return self.spawn(name, self._restarting(name, loop, max_backoff, at_once))

    async def _restarting(self, name: str, loop: Callable[[], Awaitable[Any]], max_backoff: float,
                          at_once: bool) -> None:
        delay = 0.5
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                if self._on_restart is not None:
                    self._on_restart(name)
                held = self._throttle.allow(name)
                if held is not None:
                    log.exception("background loop failed; restarting", extra={
                        "task": name, "retry_in": 0.0 if at_once else delay, "failures_not_logged": held})
            await self._sleep(0.0 if at_once else delay)
            if not at_once:
                delay = min(max_backoff, delay * 2)

    def _finished(self, task: asyncio.Task) -> None:
        name = self._tasks.pop(task, "?")
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failures += 1
            log.error("background task failed", extra={"task": name}, exc_info=exc)

    async def cancel(self, task: asyncio.Task) -> None:
        """Cancel one task and wait until it has finished (its failure, if any, is logged)."""
        await self._stop({task})

    async def close(self) -> None:
        await self._stop(set(self._tasks))

    async def _stop(self, tasks: set[asyncio.Task]) -> None:
        """Cancel and wait; cancel again while any is still running, since library code can
        swallow a cancellation and a shutdown must not hang on it."""
        while tasks:
            for task in tasks:
                task.cancel()
            _, tasks = await asyncio.wait(tasks, timeout=CANCEL_GRACE_SECONDS)  # never swallows ours
            for task in tasks:
                log.warning("task ignored cancellation; cancelling again", extra={"task": self._tasks.get(task)})
