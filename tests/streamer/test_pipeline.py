"""Publishing against real Redis: the publisher's one pipeline per flush, flights kept in order,
and the pipeline's loops (batch → enrich → render → publish), its learnt lead, drain and failures."""

from __future__ import annotations

import asyncio
import time

import orjson

from ticker.core.wire import Ticks
from ticker.streamer.stages.batch import BatchWindow, Chunk, Taken, TickBuffer
from ticker.streamer.stages.enrich import Enricher
from ticker.streamer.stages.pipeline import Pipeline
from ticker.streamer.stages.publish import Publisher
from ticker.streamer.stages.publish_breaker import PublishBreaker

from .conftest import Recorder
from .helpers import NIFTY_INDEX, STRIKES, chain, full_ticks, index, option
from .test_enrich import SPOT, EnrichRender, enricher


def pipeline(e: EnrichRender, buffer: TickBuffer, publisher: Publisher, window: float) -> Pipeline:
    return Pipeline(BatchWindow(buffer, window), e.enricher, e.renderer, publisher, e.metrics)


async def test_publisher_sends_one_pipeline_and_drops_while_the_breaker_is_open(redis, names):
    e = enricher([index(), *chain()])
    now = time.time()
    toks = [option(k, "PE").instrument_token for k in STRIKES]
    out = e.process(Taken([Chunk(Ticks.concat([full_ticks([NIFTY_INDEX], [SPOT]), full_ticks(toks, [50.0] * 5)]),
                                 now, "acc")], [b'{"order_id":"7"}']), now)
    breaker = PublishBreaker(reset_seconds=60)
    publisher = Publisher(redis, names, breaker, e.metrics, batch_max=2, timeout=2)
    async with Recorder(redis, [names.options, names.underlying, names.orders]) as rec:
        assert await publisher.publish(out)
        await _until(lambda: len(rec.messages) >= 5)
    sizes = [len(d) for _, ch, d in rec.messages if ch == names.options]
    assert sizes == [2, 2, 1] and publisher.published_total == 6
    assert [d for _, ch, d in rec.messages if ch == names.orders] == [{"order_id": "7"}]
    assert {int(k) for k in await redis.hkeys(names.latest)} >= {*toks, NIFTY_INDEX}
    breaker.failure()
    assert not await publisher.publish(out)
    assert e.metrics.dropped.labels("redis_unavailable")._value.get() == 6


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_publisher_keeps_order_across_flights_and_drops_those_behind_a_failure(redis, names):
    e = enricher([index(), *chain()])
    toks = [option(k, "PE").instrument_token for k in STRIKES]
    now = time.time()

    def flush(price: float):
        taken = Taken([Chunk(Ticks.concat([full_ticks([NIFTY_INDEX], [SPOT]), full_ticks(toks, [price] * 5)]),
                             now, "acc")], [])
        return e.process(taken, now)

    breaker = PublishBreaker(reset_seconds=60)
    publisher = Publisher(redis, names, breaker, e.metrics, batch_max=10, timeout=2)
    prices = [50.0, 51.0, 52.0]
    async with Recorder(redis, [names.options]) as rec:
        flights = [await publisher.send(flush(p)) for p in prices]  # all written before any reply is read
        assert [await publisher.settle(f) for f in flights] == [True, True, True]
        await _until(lambda: len(rec.messages) >= 3)
    assert [d[0]["last_price"] for _, _, d in rec.messages] == prices
    assert publisher.published_total == 18

    await redis.set(names.latest, b"a string, so HSET fails")  # the first flight's HSET gets an error reply
    first, second = await publisher.send(flush(53.0)), await publisher.send(flush(54.0))
    assert not await publisher.settle(first)
    assert not await publisher.settle(second)  # its reply went down with the socket
    assert e.metrics.dropped.labels("redis_error")._value.get() == 12
    assert breaker.state == "open" and publisher.published_total == 18
    await redis.delete(names.latest)
    await publisher.close()


async def test_pipeline_publishes_learns_its_lead_and_drains_the_snapshot(redis, names):
    e = enricher([index(), *chain()], snapshot_seconds=30.0)
    buffer = TickBuffer(10_000, batch_max=100)
    publisher = Publisher(redis, names, PublishBreaker(reset_seconds=60), e.metrics, batch_max=100, timeout=2)
    flow = pipeline(e, buffer, publisher, window=0.2)
    toks = [option(k, "CE").instrument_token for k in STRIKES]
    await redis.delete(names.latest)
    async with Recorder(redis, [names.options]) as rec, asyncio.TaskGroup() as tg:
        loops = [tg.create_task(loop()) for loop in (flow.batch_loop, flow.outbox.publish_loop,
                                                     flow.outbox.reply_loop)]
        for price in (50.0, 51.0, 52.0):
            buffer.put(Chunk(Ticks.concat([full_ticks([NIFTY_INDEX], [SPOT]), full_ticks(toks, [price] * 5)]),
                             time.time(), "acc"))
            await _until(lambda n=price: any(t["last_price"] == n for _, _, d in rec.messages for t in d))
        for loop in loops:
            loop.cancel()
    assert 0 < flow.batches.lead <= flow.batches.window / 2  # learnt from the flushes' durations, capped
    assert await redis.hlen(names.latest) == 0  # held back: the snapshot interval is 30 s
    await flow.drain()  # shutdown writes what the snapshot still holds, newest ticks
    latest = {int(k): orjson.loads(v) for k, v in (await redis.hgetall(names.latest)).items()}
    assert {latest[t]["last_price"] for t in toks} == {52.0} and NIFTY_INDEX in latest


class FailingOnce(Enricher):
    """An enricher with a bug that hits one batch (the batch carrying `poison` as a price)."""

    poison = 66.0

    def process(self, taken: Taken, now: float):
        if any(self.poison in c.ticks.last_price for c in taken.chunks):
            raise ZeroDivisionError("a bug in enrichment")
        return super().process(taken, now)


async def test_a_batch_that_fails_enrichment_costs_only_itself(redis, names):
    e = enricher([index(), *chain()], cls=FailingOnce)
    buffer = TickBuffer(10_000, batch_max=100)
    publisher = Publisher(redis, names, PublishBreaker(reset_seconds=60), e.metrics, batch_max=100, timeout=2)
    flow = pipeline(e, buffer, publisher, window=0.05)
    toks = [option(k, "CE").instrument_token for k in STRIKES]
    async with Recorder(redis, [names.options, names.orders]) as rec, asyncio.TaskGroup() as tg:
        loops = [tg.create_task(loop()) for loop in (flow.batch_loop, flow.outbox.publish_loop,
                                                     flow.outbox.reply_loop)]
        for price in (50.0, FailingOnce.poison, 52.0):
            buffer.put(Chunk(full_ticks(toks, [price] * 5), time.time(), "acc"))
            if price == FailingOnce.poison:
                buffer.put_order(b'{"order_id":"9"}')
                await _until(lambda: e.metrics.stage_failures.labels("enrich")._value.get() == 1, 30)
            else:
                await _until(lambda n=price: any(t.get("last_price") == n for _, _, d in rec.messages
                                                 if isinstance(d, list) for t in d), 30)
        await _until(lambda: any(d == {"order_id": "9"} for _, _, d in rec.messages), 30)
        for loop in loops:
            loop.cancel()
    assert e.metrics.dropped.labels("enrich_failed")._value.get() == 5
    prices = {t["last_price"] for _, ch, d in rec.messages if ch == names.options for t in d}
    assert prices == {50.0, 52.0}
