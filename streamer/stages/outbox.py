"""Rendered flushes on their way to Redis, in order.

Two owned loops: `publish_loop` writes queued flushes to Redis, one pipeline each, in order, on one
connection; `reply_loop` reads their replies in the same order. Up to IN_FLIGHT flushes are
written and unanswered at once, so rendering never stalls on Redis reading a large pipeline, and
the outbox holds OUTBOX_FLUSHES more: memory stays bounded (at most (IN_FLIGHT + OUTBOX_FLUSHES)
x FLUSH_MAX_BATCHES x TICK_BATCH_MAX_SIZE rendered ticks). Readers keep filling the buffer
meanwhile, so a slow Redis never blocks them. While the publish breaker is not closed, a probe
goes alone, after what was in flight. Each settled flush is told to `on_settled`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ticker.streamer.stages.publish import Flight, Publisher
from ticker.streamer.stages.render import Outgoing

OUTBOX_FLUSHES = 2  # rendered flushes waiting while earlier ones are being sent
IN_FLIGHT = 8  # flushes written to Redis whose replies have not been read yet


class Outbox:
    def __init__(self, publisher: Publisher, on_settled: Callable[[Outgoing, bool], None] | None = None) -> None:
        self.publisher = publisher
        self.on_settled = on_settled  # told every flush once its fate is known (True: it reached Redis)
        self.flushes = 0
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=OUTBOX_FLUSHES)
        self._queued_ticks = 0  # rendered, not yet sent
        self._flights: asyncio.Queue[Flight] = asyncio.Queue(maxsize=IN_FLIGHT)
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._flying = 0  # flights written and not yet settled
        self._flying_ticks = 0
        self._landed = asyncio.Event()  # set whenever nothing is in flight
        self._landed.set()

    @property
    def in_flight(self) -> int:
        """Ticks handed to the outbox and not yet published (queued or being sent)."""
        return self._queued_ticks + self._flying_ticks

    @property
    def idle(self) -> bool:
        """Nothing queued for Redis and nothing in flight."""
        return self._queue.empty() and self._flying == 0

    async def put(self, out: Outgoing) -> None:
        """Queue a rendered flush; waits while the outbox is full."""
        self._queued_ticks += out.ticks
        await self._queue.put(out)

    async def publish_loop(self) -> None:
        while True:
            await self._slots.acquire()  # before taking a flush, so none waits outside the outbox
            try:
                out = await self._queue.get()
                if self.publisher.breaker.state != "closed":
                    await self._landed.wait()  # a probe goes alone, after what was in flight
            except BaseException:
                self._slots.release()
                raise
            self._queued_ticks -= out.ticks
            self._take_off(out.ticks)
            self._flights.put_nowait(await self.publisher.send(out))

    async def reply_loop(self) -> None:
        while True:
            flight = await self._flights.get()
            try:
                await self._settle(flight)
            finally:
                self._slots.release()

    async def send(self, out: Outgoing) -> bool:
        """Write one flush and wait for its replies (on shutdown, after the loops have stopped)."""
        self._take_off(out.ticks)
        return await self._settle(await self.publisher.send(out))

    async def drain(self, deadline: float) -> None:
        """After the loops have stopped: settle what is in flight, then send what is queued until
        `deadline` (monotonic)."""
        while not self._flights.empty():
            await self._settle(self._flights.get_nowait())
        while not self._queue.empty() and time.monotonic() < deadline:
            out = self._queue.get_nowait()
            self._queued_ticks -= out.ticks
            await self.send(out)

    def _take_off(self, ticks: int) -> None:
        self._flying += 1
        self._flying_ticks += ticks
        self._landed.clear()

    async def _settle(self, flight: Flight) -> bool:
        try:
            ok = await self.publisher.settle(flight)
        finally:
            self._flying -= 1
            self._flying_ticks -= flight.out.ticks
            if self._flying == 0:
                self._landed.set()
        self.flushes += 1
        if self.on_settled is not None:
            self.on_settled(flight.out, ok)
        return ok
