"""Sequenced channels against real Redis: one seq per channel however many publishers share it,
the envelope's offset is its history entry, a lost count starts a new epoch, history is trimmed by
age, and TICK_MESSAGE_FORMAT=array keeps bare arrays without history."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.core.tick_envelope import offset_order, unwrap
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.publish import Publisher
from ticker.streamer.stages.publish_breaker import PublishBreaker
from ticker.streamer.stages.render import Outgoing

from .conftest import Recorder, wait_for


@pytest.fixture
def names(settings) -> Names:
    """Channels of this test alone: each test counts its own sequence from 1."""
    return Names(f"ticker:seq{uuid.uuid4().hex[:8]}", settings.redis_namespace)


def publisher(redis: Redis, names: Names, **kw: object) -> Publisher:
    return Publisher(redis, names, PublishBreaker(1.0), StreamerMetrics(), batch_max=2, timeout=10.0, **kw)  # type: ignore[arg-type]


def tick(token: int, price: float) -> bytes:
    return b'{"instrument_token":%d,"last_price":%r}' % (token, price)


async def test_two_publishers_share_one_sequence_per_channel_and_every_message_is_in_history(redis, names):
    """Two publishers stand for two streamer replicas publishing the same channel at once."""
    one, two = publisher(redis, names), publisher(redis, names)
    try:
        async with Recorder(redis, [names.options, names.underlying, names.orders]) as rec:
            flushes = [Outgoing(options=[tick(i, 1.0), tick(i + 1, 2.0), tick(i + 2, 3.0)],
                                underlying=[tick(99, float(i))], orders=[b'{"order_id":"%d"}' % i])
                       for i in range(20)]
            assert all(await asyncio.gather(*(p.publish(f) for p, f in zip([one, two] * 10, flushes, strict=True))))
            await wait_for(lambda: len(rec.envelopes) == 20 * 2 + 20 + 20)
    finally:
        await one.close()
        await two.close()
    by_channel: dict[str, list[dict]] = {}
    for _, channel, envelope in rec.envelopes:
        by_channel.setdefault(channel, []).append(envelope)
    assert [e["seq"] for e in by_channel[names.options]] == list(range(1, 41))  # two messages per flush
    assert [e["seq"] for e in by_channel[names.underlying]] == list(range(1, 21))
    assert [e["seq"] for e in by_channel[names.orders]] == list(range(1, 21))
    assert len({e["epoch"] for _, _, e in rec.envelopes}) == 1
    ticks = [e for _, ch, e in rec.envelopes if ch != names.orders]
    assert [offset_order(e["offset"]) for e in ticks] == sorted(offset_order(e["offset"]) for e in ticks)
    history = {i.decode(): f for i, f in await redis.xrange(names.ticks_history)}
    for envelope in ticks:
        entry = history[envelope["offset"]]
        items, position = unwrap(envelope)
        assert int(entry[b"seq"]) == envelope["seq"] and entry[b"e"].decode() == position.epoch
        assert entry[b"d"] == b"[" + b",".join(tick(t["instrument_token"], t["last_price"]) for t in items) + b"]"
        assert envelope["ts"] == int(envelope["offset"].split("-")[0])
    assert await redis.xlen(names.orders_history) == 20
    assert sorted(e["updates"][0]["order_id"] for e in by_channel[names.orders]) == sorted(str(i) for i in range(20))


async def test_a_lost_count_starts_a_new_epoch(redis, names):
    pub = publisher(redis, names)
    try:
        async with Recorder(redis, [names.options]) as rec:
            assert await pub.publish(Outgoing(options=[tick(1, 1.0)]))
            await wait_for(lambda: len(rec.envelopes) == 1)
            await redis.delete(names.sequence)  # what a Redis that lost its data looks like to the count
            assert await pub.publish(Outgoing(options=[tick(1, 2.0)]))
            await wait_for(lambda: len(rec.envelopes) == 2)
    finally:
        await pub.close()
    first, second = (e for _, _, e in rec.envelopes)
    assert first["seq"] == second["seq"] == 1 and first["epoch"] != second["epoch"]


async def test_history_keeps_only_the_last_seconds(redis, names):
    """Trimming is approximate (whole stream nodes of 100 entries go at once): publish until the
    oldest entries of a one-second history are gone."""
    pub = publisher(redis, names, history_seconds=1)
    try:
        for i in range(150):
            assert await pub.publish(Outgoing(options=[tick(i, 1.0)]))
        first = (await redis.xrange(names.ticks_history, count=1))[0][0]

        async def trimmed() -> bool:
            assert await pub.publish(Outgoing(options=[tick(0, 2.0)]))
            return (await redis.xrange(names.ticks_history, count=1))[0][0] != first

        async with asyncio.timeout(60):
            while not await trimmed():
                await asyncio.sleep(0.05)
    finally:
        await pub.close()
    assert await redis.xlen(names.ticks_history) < 150


async def test_the_array_format_publishes_bare_arrays_without_history(redis, names):
    pub = publisher(redis, names, envelope=False)
    try:
        async with Recorder(redis, [names.options, names.orders]) as rec:
            assert await pub.publish(Outgoing(options=[tick(1, 1.0)], orders=[b'{"order_id":"1"}']))
            await wait_for(lambda: len(rec.messages) == 2)
    finally:
        await pub.close()
    assert sorted(map(str, (d for _, _, d in rec.messages))) == sorted(
        map(str, [[{"instrument_token": 1, "last_price": 1.0}], {"order_id": "1"}]))
    assert not rec.envelopes and not await redis.exists(names.ticks_history, names.sequence)
