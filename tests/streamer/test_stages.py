"""Small stages alone: buffer, ingest (decode), breaker, bars, backpressure, Kite messages."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson

from ticker.core.wire import Ticks, encode
from ticker.infra.kite.ticker_socket import (
    Credentials,
    Timing,
    subscribe_messages,
    ticker_url,
    unsubscribe_messages,
)
from ticker.streamer.process.backpressure import Backpressure, classify
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.bars import BarBuilder
from ticker.streamer.stages.batch import Chunk, TickBuffer
from ticker.streamer.stages.decode import Decoder
from ticker.streamer.stages.publish_breaker import PublishBreaker

from .helpers import full_ticks


def chunk(n: int, first: int = 1, account: str = "a") -> Chunk:
    tokens = (np.arange(first, first + n) << 8) | 2
    return Chunk(Ticks.build(token=tokens, mode="ltp", last_price=1.0), 1.0, account)


def sample(metric, **labels) -> float:
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_buffer_drops_oldest_when_full_and_counts_it():
    buf = TickBuffer(capacity=10, batch_max=1000)
    assert buf.put(chunk(6, first=1)) == 0
    assert buf.put(chunk(6, first=100)) == 2  # two oldest ticks go
    taken = buf.take()
    tokens = np.concatenate([c.ticks.token for c in taken.chunks]) >> 8
    assert tokens.tolist() == [3, 4, 5, 6] + list(range(100, 106))
    assert buf.count == 0 and not buf.pending()


async def test_buffer_batch_is_due_at_max_size_or_after_window():
    buf = TickBuffer(capacity=1000, batch_max=5)
    assert await buf.wait_batch(window=0.01, idle_timeout=0.01) is False  # nothing buffered
    buf.put(chunk(2))
    assert await buf.wait_batch(window=0.02, idle_timeout=1.0) is True  # window ran out
    assert buf.take().ticks == 2
    buf.put(chunk(5))
    await asyncio.wait_for(buf.wait_batch(window=3600, idle_timeout=1.0), 60)  # size reached: not the window
    assert buf.take().ticks == 5
    assert buf.put_order(b"{}") and buf.take().orders == [b"{}"]


async def test_batch_goes_when_the_readers_go_idle_and_grows_while_they_are_busy():
    buf = TickBuffer(capacity=10_000, batch_max=1000)
    buf.put(chunk(2))
    await asyncio.wait_for(buf.wait_batch(window=3600, idle_timeout=1.0), 60)  # idle readers: not the window
    assert buf.take().ticks == 2

    async def busy_reader(frames: int) -> None:  # a frame every turn of the loop, as a burst is read
        for i in range(frames):
            buf.put(chunk(1, first=1 + i))
            await asyncio.sleep(0)

    buf.put(chunk(1, first=999))
    reader = asyncio.create_task(busy_reader(40))
    await asyncio.wait_for(buf.wait_batch(window=3600, idle_timeout=1.0), 60)
    assert reader.done() and buf.take().ticks == 41  # one batch for the whole burst


async def test_without_adaptive_batching_a_batch_waits_for_its_window():
    buf = TickBuffer(capacity=1000, batch_max=1000)
    buf.put(chunk(2))
    waiting = asyncio.create_task(buf.wait_batch(window=3600, idle_timeout=1.0, adaptive=False))
    for _ in range(50):  # the readers are idle for many turns: still waiting for the window
        await asyncio.sleep(0)
    assert not waiting.done()
    buf.put(chunk(998, first=10))  # the size limit still ends it
    assert await asyncio.wait_for(waiting, 60) is True


async def test_buffer_take_with_a_limit_leaves_the_rest_due():
    buf = TickBuffer(capacity=1000, batch_max=5)
    for first in (1, 100, 200):
        buf.put(chunk(4, first=first))
    taken = buf.take(limit=8)
    assert [len(c.ticks) for c in taken.chunks] == [4, 4] and buf.count == 4 and buf.pending()
    await asyncio.wait_for(buf.wait_batch(window=3600, idle_timeout=1.0), 60)  # a backlog: not the window
    assert buf.take(limit=1).ticks == 4 and not buf.pending()  # at least one whole frame


def test_ingest_decodes_frames_routes_postbacks_and_counts_bad_input():
    metrics = StreamerMetrics()
    buf = TickBuffer(capacity=1000, batch_max=1000)
    ingest = Decoder(buf, metrics)
    ticks = full_ticks([1025, 2049], [10.0, 20.0])
    assert ingest.frame("acc", encode(ticks)) == 2
    assert ingest.frame("acc", b"\x00") == 0  # heartbeat
    assert ingest.frame("acc", b"\x00\x05\x00\x08abc") == 0  # malformed
    ingest.text("acc", orjson.dumps({"type": "order", "data": {"order_id": "1", "status": "COMPLETE"}}))
    ingest.text("acc", "not json")
    taken = buf.take()
    assert taken.chunks[0].ticks == ticks and taken.chunks[0].account_id == "acc"
    assert orjson.loads(taken.orders[0]) == {"order_id": "1", "status": "COMPLETE", "account_id": "acc"}
    assert sample(metrics.frames, kind="malformed") == 1 and sample(metrics.frames, kind="heartbeat") == 1
    assert sample(metrics.frames, kind="bad_text") == 1 and ingest.received_total == 2
    assert "acc" in ingest.last_tick


def test_breaker_opens_drops_probes_and_recovers():
    now = [0.0]
    breaker = PublishBreaker(reset_seconds=2.0, clock=lambda: now[0])
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 2.5
    assert breaker.state == "half_open" and breaker.allow()
    breaker.failure()  # probe failed: open again for a full period
    assert not breaker.allow()
    now[0] = 5.0
    breaker.success()
    assert breaker.state == "closed" and breaker.trips == 1


def test_bars_close_on_a_later_interval_or_when_due():
    bars = BarBuilder(60)
    tok = np.array([256265, 256265, 256265])
    closed = bars.update(tok, np.array([100.0, 103.0, 99.0]), np.array([0, 0, 0]), np.array([60.0, 70.0, 119.0]))
    assert closed == []
    (bar,) = bars.update(tok[:1], np.array([101.0]), np.array([0]), np.array([125.0]))
    assert (bar.start, bar.open, bar.high, bar.low, bar.close, bar.ticks) == (60.0, 100.0, 103.0, 99.0, 99.0, 3)
    assert bars.due(179.0) == [] and [b.start for b in bars.due(180.0)] == [120.0]
    assert bars.due(10_000.0) == []


def test_backpressure_levels():
    assert classify(1.0, 0.0) == "healthy"
    assert classify(0.9, 0.0) == "warning" and classify(1.0, 0.85) == "warning"
    assert classify(0.7, 0.0) == "critical" and classify(1.0, 0.96) == "critical"
    assert classify(0.3, 0.0) == "overload" and classify(1.0, 0.995) == "overload"
    t = [0.0]
    bp = Backpressure(clock=lambda: t[0])
    bp.sample(0, 0)
    t[0] = 2.0
    bp.sample(1000, 600)
    report = bp.report(fill=0.1)
    assert report["published_to_received"] == 0.6
    assert report["level"] == "critical" and report["received_per_second"] == 500.0


def test_kite_messages_and_url():
    msgs = [orjson.loads(m) for m in subscribe_messages({5: "full", 3: "ltp", 9: "full"}, batch=2)]
    assert msgs == [{"a": "subscribe", "v": [3, 5]}, {"a": "mode", "v": ["ltp", [3]]},
                    {"a": "mode", "v": ["full", [5]]}, {"a": "subscribe", "v": [9]},
                    {"a": "mode", "v": ["full", [9]]}]
    assert [orjson.loads(m) for m in unsubscribe_messages([7, 1, 4], batch=2)] == [
        {"a": "unsubscribe", "v": [1, 4]}, {"a": "unsubscribe", "v": [7]}]
    url = ticker_url("wss://ws.kite.trade", Credentials("key", "tok/en"))
    assert url == "wss://ws.kite.trade?api_key=key&access_token=tok%2Fen"
    assert "tok" not in repr(Credentials("key", "secret-token"))


def test_backoff_grows_with_jitter_and_is_capped():
    timing = Timing(stall_seconds=5, reconnect_base=0.25, reconnect_max=30, subscribe_batch=500)
    first = [timing.backoff(0) for _ in range(50)]
    assert all(0.125 <= d <= 0.25 for d in first) and len(set(first)) > 1
    assert all(15 <= timing.backoff(40) <= 30 for _ in range(20))
