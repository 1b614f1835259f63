"""Enrichment and rendering alone: which forward each option is priced on, Greeks on a whole batch,
the latest-tick map, bars; the publisher's one pipeline and the pipeline's loops against real Redis."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import orjson
from vollib.black import black
from vollib.black_scholes import black_scholes

from ticker.core.greeks import time_to_expiry
from ticker.core.wire import Ticks
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.batch import BatchWindow, Chunk, Taken, TickBuffer
from ticker.streamer.stages.enrich import Enricher
from ticker.streamer.stages.instrument_table import InstrumentTable
from ticker.streamer.stages.pipeline import Pipeline
from ticker.streamer.stages.publish import Publisher
from ticker.streamer.stages.publish_breaker import PublishBreaker
from ticker.streamer.stages.render import BatchRenderer, Outgoing

from .conftest import Recorder
from .helpers import EXPIRY, NIFTY_INDEX, STRIKES, chain, full_ticks, future, index, option

IST = ZoneInfo("Asia/Kolkata")
R = 0.10
SPOT = 25_000.0


@dataclass
class EnrichRender:
    """The enrich and render stages, as the pipeline runs them on each batch."""

    enricher: Enricher
    renderer: BatchRenderer

    @property
    def metrics(self) -> StreamerMetrics:
        return self.enricher.metrics

    def process(self, taken: Taken, now: float) -> Outgoing:
        return self.renderer.render(self.enricher.process(taken, now), now)


def enricher(instruments, model="black76", snapshot_seconds: float = 0.0, cls=Enricher) -> EnrichRender:
    table = InstrumentTable(instruments)
    return EnrichRender(cls(table, model=model, rate=R, dividend_yield=0.0, bar_interval=60, metrics=StreamerMetrics()),
                        BatchRenderer(table, model=model, bar_interval=60, tz=IST, snapshot_seconds=snapshot_seconds))


def pipeline(e: EnrichRender, buffer: TickBuffer, publisher: Publisher, window: float) -> Pipeline:
    return Pipeline(BatchWindow(buffer, window), e.enricher, e.renderer, publisher, e.metrics)


def years(now: float) -> float:
    return float(np.asarray(time_to_expiry(now, np.array([EXPIRY], dtype="datetime64[D]")))[0])


def chain_ticks(forward: float, t: float, vol: float = 0.15) -> tuple[list[int], list[float]]:
    tokens, prices = [], []
    for k in STRIKES:
        for kind in ("CE", "PE"):
            tokens.append(option(k, kind).instrument_token)
            prices.append(black(kind[0].lower(), forward, k, t, R, vol))
    return tokens, prices


def run(e: EnrichRender, ticks: Ticks, now: float) -> list[dict]:
    out = e.process(Taken([Chunk(ticks, now, "acc")], []), now)
    return [orjson.loads(b) for b in out.options]


def test_black76_uses_the_future_then_the_synthetic_forward_then_spot_carried():
    now = time.time()
    t = years(now)
    fwd = SPOT * np.exp(R * t) + 3.0  # a forward that is not the carried spot, to tell them apart
    e = enricher([index(), future(), *chain()])
    tokens, prices = chain_ticks(fwd, t)
    # spot only: spot carried at r
    docs = run(e, Ticks.concat([full_ticks([NIFTY_INDEX], [SPOT]), full_ticks(tokens[:1], prices[:1])]), now)
    assert abs(docs[0]["underlying_price"] - SPOT * np.exp(R * t)) < 1e-6
    # the whole chain: synthetic forward from the strike where call and put are closest
    docs = run(e, full_ticks(tokens, prices), now)
    assert all(abs(d["underlying_price"] - fwd) < 1e-6 for d in docs)
    assert max(abs(d["iv"] - 0.15) for d in docs) < 1e-6
    # the future of that expiry trades: it wins
    docs = run(e, Ticks.concat([full_ticks([future().instrument_token], [fwd + 1]),
                                full_ticks(tokens[:2], prices[:2])]), now)
    assert all(d["underlying_price"] == fwd + 1 for d in docs)


def test_bsm_prices_on_spot_and_greeks_cover_the_batch():
    now = time.time()
    t = years(now)
    e = enricher([index(), *chain()], model="bsm")
    tokens = [option(k, "CE").instrument_token for k in STRIKES]
    prices = [black_scholes("c", SPOT, k, t, R, 0.2) for k in STRIKES]
    docs = run(e, Ticks.concat([full_ticks([NIFTY_INDEX], [SPOT]), full_ticks(tokens, prices)]), now)
    assert len(docs) == len(STRIKES) and all(d["model"] == "bsm" and d["underlying_price"] == SPOT for d in docs)
    assert max(abs(d["iv"] - 0.2) for d in docs) < 1e-6
    assert all(0 < d["delta"] < 1 and d["gamma"] > 0 and d["vega"] > 0 and d["theta"] < 0 for d in docs)


def test_no_underlying_yet_gives_null_greeks_and_counts_it():
    e = enricher([index(), *chain()])
    docs = run(e, full_ticks([option(25_000.0, "CE").instrument_token], [120.0]), time.time())
    assert docs[0]["iv"] is None and docs[0]["underlying_price"] is None and docs[0]["last_price"] == 120.0
    assert e.metrics.greeks_failures.labels("no_underlying")._value.get() == 1


def test_unknown_tokens_are_dropped_and_latest_keeps_the_last_tick_per_token():
    e = enricher([index(), *chain()])
    now = time.time()
    tok = option(25_000.0, "CE").instrument_token
    ticks = Ticks.concat([full_ticks([NIFTY_INDEX], [SPOT]), full_ticks([tok, 999_999 << 8 | 2, tok], [100.0, 5.0, 101.5])])
    out = e.process(Taken([Chunk(ticks, now, "acc")], [b'{"order_id":"1"}']), now)
    assert [orjson.loads(b)["last_price"] for b in out.options] == [100.0, 101.5]
    assert orjson.loads(out.latest[str(tok).encode()])["last_price"] == 101.5
    assert orjson.loads(out.latest[str(NIFTY_INDEX).encode()])["instrument_type"] == "INDEX"
    assert e.metrics.dropped.labels("unknown_token")._value.get() == 1 and out.orders == [b'{"order_id":"1"}']


def test_underlying_ticks_make_bars():
    e = enricher([index()])
    start = (time.time() // 60) * 60 - 120
    for i, price in enumerate([100.0, 104.0, 98.0]):
        e.process(Taken([Chunk(full_ticks([NIFTY_INDEX], [price]), start + i, "acc")], []), start + i)
    out = e.process(Taken([], []), start + 61)
    (bar,) = [orjson.loads(b) for b in out.bars]
    assert bar["type"] == "bar" and bar["instrument_token"] == NIFTY_INDEX and bar["name"] == "NIFTY"
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["ticks"]) == (100.0, 104.0, 98.0, 98.0, 3)


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


def test_synthetic_forwards_of_many_chains_at_once():
    from datetime import timedelta

    from ticker.streamer.stages.latest_prices import LatestPrices

    later = EXPIRY + timedelta(days=7)
    reg = InstrumentTable([index(), *chain(), *chain(later), option(25_000.0, "CE", EXPIRY + timedelta(days=14))])
    market = LatestPrices(reg, "black76", R)
    t = 0.05
    fwd = {EXPIRY: 25_040.0, later: 24_990.0}
    for expiry, f in fwd.items():
        for k in STRIKES:
            for kind in ("CE", "PE"):
                row = reg.rows_of(np.array([option(k, kind, expiry).instrument_token]))
                market.observe(row, np.array([black(kind[0].lower(), f, k, t, R, 0.2)]))
    cids = [int(reg.chain_id[reg.rows_of(np.array([option(25_000.0, "CE", e).instrument_token]))[0]])
            for e in (EXPIRY, later, EXPIRY + timedelta(days=14))]
    got = market.chain_forwards(np.array(cids), np.full(3, t))
    assert abs(got[0] - fwd[EXPIRY]) < 1e-6 and abs(got[1] - fwd[later]) < 1e-6
    assert np.isnan(got[2])  # a call without its put: no parity


def test_market_prices_survive_a_reload_and_unknown_rows_never_get_one():
    from ticker.streamer.stages.latest_prices import LatestPrices

    first = InstrumentTable([index(), *chain()])  # no future: every option's future row is -1
    market = LatestPrices(first, "black76", R)
    market.observe(first.rows_of(np.array([NIFTY_INDEX])), np.array([SPOT]))
    market.observe(np.array([-1, -1]), np.array([5.0, 6.0]))  # ticks of unknown tokens
    opts = np.flatnonzero(first.is_option)
    t = np.full(len(opts), 0.05)
    assert np.allclose(market.underlying_price(opts, t), SPOT * np.exp(R * 0.05))  # spot carried at r
    second = InstrumentTable([index(), future(), *chain()], previous=first)
    market.rebind(second)
    opts = np.flatnonzero(second.is_option)
    assert np.allclose(market.underlying_price(opts, t), SPOT * np.exp(R * 0.05))  # the future has not traded
    market.observe(second.rows_of(np.array([future().instrument_token])), np.array([25_080.0]))
    assert (market.underlying_price(opts, t) == 25_080.0).all()


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
