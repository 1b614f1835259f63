"""The batch stage's clock and the hand-over to Redis.

Three owned loops: `run` waits for a batch (TICK_BATCH_WINDOW_MS since the oldest tick, or
TICK_BATCH_MAX_SIZE ticks, whichever first), enriches it (sync, CPU) and queues the rendered
flush; `publish_loop` writes queued flushes to Redis, one pipeline each, in order, on one
connection; `reply_loop` reads their replies in the same order. Up to IN_FLIGHT flushes are
written and unanswered at once, so rendering never stalls on Redis reading a large pipeline, and
the outbox holds OUTBOX_FLUSHES more: memory stays bounded (at most (IN_FLIGHT + OUTBOX_FLUSHES)
x FLUSH_MAX_BATCHES x TICK_BATCH_MAX_SIZE rendered ticks). Readers keep filling the buffer
meanwhile, so a slow Redis never blocks them. The enrich loop also wakes once a second so bars of
quiet instruments close on time.

A failing stage costs one batch, never the stream: a batch whose enrichment raises is dropped
(counted, reason `enrich_failed`; its order postbacks still go out) and the loop goes straight on
to the next one, and a flush the publisher could not even write is settled as failed.

The window bounds a tick's age when its flush reaches Redis, not when the flush starts: a batch is
taken `lead` seconds before its window ends, `lead` being a moving average of how long recent
flushes took from start to Redis's reply (at most half the window).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ticker.infra.runtime.throttle import Throttle
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.batch import Taken, TickBuffer
from ticker.streamer.stages.enrich import Enricher, Outgoing
from ticker.streamer.stages.publish import Flight, Publisher

log = logging.getLogger(__name__)
IDLE_WAKE_SECONDS = 1.0
FLUSH_MAX_BATCHES = 4  # a backlog goes out a few batches per flush: each flush has fixed costs (the
# Greeks call, a column per field), while much larger ones would hold the oldest ticks back
OUTBOX_FLUSHES = 2  # rendered flushes waiting while earlier ones are being sent
IN_FLIGHT = 8  # flushes written to Redis whose replies have not been read yet
LEAD_WEIGHT = 0.2  # of the newest flush in the moving average of flush durations
DRAIN_SECONDS = 5.0


class Flusher:
    def __init__(self, buffer: TickBuffer, enricher: Enricher, publisher: Publisher,
                 metrics: StreamerMetrics, window_seconds: float) -> None:
        self.buffer = buffer
        self.enricher = enricher
        self.publisher = publisher
        self.metrics = metrics
        self.window = window_seconds
        self.lead = 0.0  # seconds a batch is taken before its window ends
        self.flushes = 0
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=OUTBOX_FLUSHES)
        self._queued_ticks = 0  # rendered, not yet sent
        self._flights: asyncio.Queue[Flight] = asyncio.Queue(maxsize=IN_FLIGHT)
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._flying = 0  # flights written and not yet settled
        self._flying_ticks = 0
        self._landed = asyncio.Event()  # set whenever nothing is in flight
        self._landed.set()
        self._throttle = Throttle()

    @property
    def in_flight(self) -> int:
        """Ticks taken from the buffer and not yet published (queued or being sent)."""
        return self._queued_ticks + self._flying_ticks

    async def run(self) -> None:
        while True:
            await self.buffer.wait_batch(self.window - self.lead, IDLE_WAKE_SECONDS)
            out = self.enrich()
            self._queued_ticks += out.ticks
            await self._outbox.put(out)

    async def publish_loop(self) -> None:
        while True:
            await self._slots.acquire()  # before taking a flush, so none waits outside the outbox
            try:
                out = await self._outbox.get()
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

    def enrich(self) -> Outgoing:
        """Take the next batch from the buffer and render it."""
        taken = self.buffer.take(self.buffer.batch_max * FLUSH_MAX_BATCHES)
        self.metrics.buffer_ticks.set(self.buffer.count)
        started, began = time.perf_counter(), time.time()
        try:
            out = self.enricher.process(taken, began)
        except Exception:  # a bug must cost this batch, never the stream
            out = self._enrich_failed(taken)
        out.started = began
        self.metrics.enrich_seconds.observe(time.perf_counter() - started)
        if out.ticks:
            self.metrics.batch_size.observe(out.ticks)
        return out

    def _enrich_failed(self, taken: Taken) -> Outgoing:
        self.metrics.stage_failures.labels("enrich").inc()
        self.metrics.dropped.labels("enrich_failed").inc(taken.ticks)
        held = self._throttle.allow("enrich")
        if held is not None:
            log.exception("enriching a batch failed; dropped it and went on with the next",
                          extra={"ticks": taken.ticks, "failures_not_logged": held})
        return Outgoing(orders=taken.orders)

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
        if not ok and flight.out.latest:  # the hash catches up once Redis is back
            self.enricher.snapshot.restore(flight.out.latest, flight.out.started)
        if ok and flight.out.oldest_received is not None:
            now = time.time()
            self.metrics.pipeline_seconds.observe(max(0.0, now - flight.out.oldest_received))
            took = min(max(0.0, now - flight.out.started), self.window / 2)
            self.lead += LEAD_WEIGHT * (took - self.lead)
        return ok

    async def _send(self, out: Outgoing) -> bool:
        self._take_off(out.ticks)
        return await self._settle(await self.publisher.send(out))

    @property
    def idle(self) -> bool:
        """Nothing queued for Redis and nothing in flight."""
        return self._outbox.empty() and self._flying == 0

    async def drain(self) -> None:
        """On shutdown, after the loops have stopped: settle what is in flight, send what is
        queued, then what is still buffered and the latest-tick snapshot's pending fields, for at
        most DRAIN_SECONDS (a dead Redis fails fast through the breaker)."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while not self._flights.empty():
            await self._settle(self._flights.get_nowait())
        while not self._outbox.empty() and time.monotonic() < deadline:
            out = self._outbox.get_nowait()
            self._queued_ticks -= out.ticks
            await self._send(out)
        while self.buffer.pending() and time.monotonic() < deadline:
            await self._send(self.enrich())
        rest = self.enricher.snapshot.take(time.time(), force=True)
        if rest and time.monotonic() < deadline:
            await self._send(Outgoing(latest=rest))
        await self.publisher.close()
