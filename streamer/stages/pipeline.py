"""The stages after the sockets, joined: batch → enrich → render (and chains) → publish.

`batch_loop` waits for the next batch, enriches and renders it (sync, CPU) and hands the flush to
the outbox, whose `publish_loop` and `reply_loop` send it; the three run as owned loops. A failing
stage costs one batch, never the stream: a batch whose enrichment or rendering raises is dropped
(counted, reason `enrich_failed`; its order postbacks still go out) and the loop goes straight on
to the next one. Each settled flush teaches the batch window its lead, and one that never reached
Redis gives its latest-tick snapshot fields back, so the hash catches up once Redis is back.
"""

from __future__ import annotations

import logging
import time

from ticker.infra.runtime.throttle import Throttle
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.batch import BatchWindow, Taken
from ticker.streamer.stages.chain_stream import ChainStage
from ticker.streamer.stages.enrich import Enriched, Enricher
from ticker.streamer.stages.outbox import Outbox
from ticker.streamer.stages.publish import Publisher
from ticker.streamer.stages.render import BatchRenderer, Outgoing

log = logging.getLogger(__name__)
DRAIN_SECONDS = 5.0


class Pipeline:
    def __init__(self, batches: BatchWindow, enricher: Enricher, renderer: BatchRenderer, publisher: Publisher,
                 metrics: StreamerMetrics, chains: ChainStage | None = None) -> None:
        self.batches = batches
        self.enricher = enricher
        self.renderer = renderer
        self.publisher = publisher
        self.chains = chains
        self.outbox = Outbox(publisher, on_settled=self._settled)
        self.metrics = metrics
        self._throttle = Throttle()

    @property
    def in_flight(self) -> int:
        """Ticks taken from the buffer and not yet published (queued or being sent)."""
        return self.outbox.in_flight

    @property
    def idle(self) -> bool:
        return self.outbox.idle

    async def batch_loop(self) -> None:
        while True:
            taken = await self.batches.next()
            await self.outbox.put(self.flush(taken))

    def flush(self, taken: Taken) -> Outgoing:
        """One batch, enriched and rendered."""
        self.metrics.buffer_ticks.set(self.batches.buffer.count)
        started, began = time.perf_counter(), time.time()
        try:
            enriched = self.enricher.process(taken, began)
            out = self.renderer.render(enriched, began)
        except Exception:  # a bug must cost this batch, never the stream
            out = self._failed(taken)
        else:
            self._chains(enriched, out, began)
        out.started = began
        self.metrics.enrich_seconds.observe(time.perf_counter() - started)
        if out.ticks:
            self.metrics.batch_size.observe(out.ticks)
        return out

    def _chains(self, enriched: Enriched, out: Outgoing, now: float) -> None:
        """The chains due with this flush; a failure costs the chains of this one, not its ticks."""
        if self.chains is None:
            return
        try:
            out.chains = self.chains.observe(enriched, now)
        except Exception:
            self.metrics.stage_failures.labels("chain").inc()
            held = self._throttle.allow("chain")
            if held is not None:
                log.exception("computing the option chains failed; the ticks went out without them",
                              extra={"failures_not_logged": held})

    def _failed(self, taken: Taken) -> Outgoing:
        self.metrics.stage_failures.labels("enrich").inc()
        self.metrics.dropped.labels("enrich_failed").inc(taken.ticks)
        held = self._throttle.allow("enrich")
        if held is not None:
            log.exception("enriching a batch failed; dropped it and went on with the next",
                          extra={"ticks": taken.ticks, "failures_not_logged": held})
        return Outgoing(orders=taken.orders)

    def _settled(self, out: Outgoing, ok: bool) -> None:
        if not ok and out.latest:  # the hash catches up once Redis is back
            self.renderer.snapshot.restore(out.latest, out.started)
        if ok and out.oldest_received is not None:
            now = time.time()
            self.metrics.pipeline_seconds.observe(max(0.0, now - out.oldest_received))
            self.batches.landed(now - out.started)

    async def drain(self) -> None:
        """On shutdown, after the loops have stopped: settle what is in flight, send what is
        queued, then what is still buffered and the latest-tick snapshot's pending fields, for at
        most DRAIN_SECONDS (a dead Redis fails fast through the breaker)."""
        deadline = time.monotonic() + DRAIN_SECONDS
        await self.outbox.drain(deadline)
        while self.batches.buffer.pending() and time.monotonic() < deadline:
            await self.outbox.send(self.flush(self.batches.take()))
        rest = self.renderer.snapshot.take(time.time(), force=True)
        if rest and time.monotonic() < deadline:
            await self.outbox.send(Outgoing(latest=rest))
        await self.publisher.close()
