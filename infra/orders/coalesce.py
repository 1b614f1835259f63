"""Coalescing: calls made while a batch is being prepared or in flight go out together.

Requests that arrive together each need a Postgres insert (or similar); sent one by one they cost
a round trip and a commit apiece. A `Coalescer` collects them and runs one batch. A lone request
waits for nothing: its flush starts on the very next loop turn. At most `max_inflight` batches run
at once; calls that arrive meanwhile wait for one to finish and then leave together. So batches
grow exactly when the database is slow, and the number of commits stays bounded however many
requests wait (adaptive group commit, no timers to tune).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Generic, TypeVar

log = logging.getLogger("ticker.infra.orders.coalesce")

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Subclasses implement `run(items) -> one result (or exception) per item, in order`."""

    name = "batch"

    def __init__(self, max_batch: int = 256, max_inflight: int = 2) -> None:
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flushes: set[asyncio.Task] = set()
        self._scheduled = False

    def submit(self, item: T) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_now)
        return future

    async def run(self, items: list[T]) -> Sequence[R | BaseException]:
        raise NotImplementedError

    def _flush_now(self, force: bool = False) -> None:
        self._scheduled = False
        while self._pending and (force or len(self._flushes) < self.max_inflight):
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            task = asyncio.create_task(self._flush(batch), name=self.name)
            self._flushes.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._flushes.discard(task)
        if not task.cancelled() and task.exception() is not None:  # _flush hands errors to the callers
            log.error("%s flush failed", self.name, exc_info=task.exception())
        if self._pending and not self._scheduled:  # what queued behind the finished batch goes now
            self._flush_now()

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.run([item for item, _ in batch])
        except Exception as exc:  # the whole batch failed: every caller gets the error
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away (client disconnected)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Send what is pending and wait for batches in flight (their callers are waiting on them)."""
        self._flush_now(force=True)
        while self._flushes:
            await asyncio.gather(*list(self._flushes), return_exceptions=True)
