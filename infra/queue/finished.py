"""Being told that a job finished, for status long-polls.

Workers publish a job's id on the finished channel once its result is written (`arq_adapter`). A
process keeps one subscription to it, opened on first use, and wakes the waiters watching that id.
The signal only says "read again": a waiter always re-reads the job's status, and re-reads on a
coarse timer too, so a message lost (Redis restarting, the subscription not yet confirmed) costs
at most that timer, never a hung request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.infra.queue.arq_adapter import finished_channel
from ticker.infra.runtime.outage import REDIS_ERRORS

log = logging.getLogger(__name__)

RESUBSCRIBE_S = 1.0  # after losing the subscription; waiters re-check on their own timer meanwhile


class Watch:
    """One waiter's view of one job's finished signal."""

    def __init__(self, closing: asyncio.Event) -> None:
        self._event = asyncio.Event()
        self._closing = closing

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True when signalled (or closing) within `timeout` seconds; the signal is then consumed."""
        if self._closing.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
        fired = self._event.is_set()
        self._event.clear()
        return fired


class FinishedJobs:
    def __init__(self, redis: Redis, names: Names) -> None:
        self._redis = redis
        self._channel = finished_channel(names)
        self._watches: dict[str, set[Watch]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[Watch]:
        """Watch `job_id` for the block; enter it before reading the status, so a job finishing in
        between still wakes the wait that follows."""
        if not self._closing.is_set() and (self._listener is None or self._listener.done()):
            self._listener = asyncio.create_task(self._listen(), name="finished-jobs")
        watch = Watch(self._closing)
        self._watches.setdefault(job_id, set()).add(watch)
        try:
            yield watch
        finally:
            watching = self._watches.get(job_id)
            if watching is not None:
                watching.discard(watch)
                if not watching:
                    del self._watches[job_id]

    def _notify(self, job_id: str) -> None:
        for watch in self._watches.get(job_id, ()):
            watch.set()

    async def _listen(self) -> None:
        while not self._closing.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    data = message.get("data")
                    self._notify(data.decode() if isinstance(data, bytes) else str(data))
            except REDIS_ERRORS as exc:
                log.debug("finished-jobs subscription lost: %s", exc)
                await asyncio.sleep(RESUBSCRIBE_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        """Wake every waiter (each answers with what it has) and stop listening."""
        self._closing.set()
        for watching in self._watches.values():
            for watch in watching:
                watch.set()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_ERRORS):
                await self._listener
