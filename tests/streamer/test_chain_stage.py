"""The chain stage alone: what it publishes per chain and interval, from the enriched batch."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time

import numpy as np
import orjson
from vollib.black import black

from ticker.core.clock import IST
from ticker.core.contracts import Names
from ticker.core.tick_envelope import CHAINS, StreamPosition, unwrap
from ticker.core.wire import Ticks
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.batch import Chunk, Taken
from ticker.streamer.stages.chain_stream import CHAINS_PER_FLUSH, ChainOut, ChainStage
from ticker.streamer.stages.enrich import Enricher
from ticker.streamer.stages.instrument_table import InstrumentTable
from ticker.streamer.stages.publish import Publisher
from ticker.streamer.stages.publish_breaker import PublishBreaker
from ticker.streamer.stages.render import Outgoing

from .helpers import EXPIRY, NIFTY_INDEX, STRIKES, chain, full_ticks, index, option

R, SPOT, VOL = 0.10, 25_000.0, 0.15
OI = {k: (40_000 - 5_000 * i, 10_000 + 6_000 * i) for i, k in enumerate(STRIKES)}  # (call, put)


def stages(instruments, interval: float = 1.0) -> tuple[Enricher, ChainStage]:
    table = InstrumentTable(instruments)
    enricher = Enricher(table, model="black76", rate=R, dividend_yield=0.0, bar_interval=60, metrics=StreamerMetrics())
    return enricher, ChainStage(table, interval, model="black76")


def at(hour: int, minute: int = 0) -> float:
    return datetime.combine(date.today(), time(hour, minute), IST).timestamp()


def whole_chain(now: float, expiry: date = EXPIRY) -> Ticks:
    t = (datetime.combine(expiry, time(15, 30), IST).timestamp() - now) / (365 * 86_400)
    forward = SPOT * np.exp(R * t)
    tokens, prices, oi = [NIFTY_INDEX], [SPOT], [0]
    for k in STRIKES:
        for side, kind in enumerate(("CE", "PE")):
            tokens.append(option(k, kind, expiry).instrument_token)
            prices.append(black(kind[0].lower(), forward, k, t, R, VOL))
            oi.append(OI[k][side])
    return full_ticks(tokens, prices, oi=np.array(oi))


def step(enricher: Enricher, stage: ChainStage, ticks: Ticks, now: float) -> ChainOut:
    return stage.observe(enricher.process(Taken([Chunk(ticks, now, "acc")], []), now), now)


def test_a_chain_goes_out_whole_then_only_its_changed_strikes_and_at_most_once_an_interval() -> None:
    enricher, stage = stages([index(), *chain()])
    now = at(10)
    out = step(enricher, stage, whole_chain(now), now)
    [doc] = [orjson.loads(m) for m in out.messages]
    assert doc["underlying"] == "NIFTY" and doc["expiry"] == EXPIRY.isoformat() and doc["full"] is False
    assert [r["strike"] for r in doc["rows"]] == list(STRIKES) and doc["spot"] == SPOT
    assert doc["atm_iv"] is not None and abs(doc["atm_iv"] - VOL) < 1e-4
    assert doc["forward"] is not None and abs(doc["forward"] - SPOT * np.exp(R * doc["t"])) < 0.05
    calls, puts = sum(c for c, _ in OI.values()), sum(p for _, p in OI.values())
    assert abs(doc["pcr_oi"] - puts / calls) < 1e-12
    payout = {s: sum(c * max(0, s - k) + p * max(0, k - s) for k, (c, p) in OI.items()) for s in STRIKES}
    assert doc["max_pain"] == min(STRIKES, key=lambda s: (payout[s], s))
    leg = doc["rows"][0]["ce"]
    assert leg["token"] == option(STRIKES[0], "CE").instrument_token and leg["oi"] == OI[STRIKES[0]][0]
    assert leg["bid"] < leg["ltp"] < leg["ask"] and leg["oi_change"] == 0  # its first OI is the day's open
    assert out.oi_open[b"%d" % leg["token"]] == b"%d" % OI[STRIKES[0]][0] and out.day == date.today().isoformat()
    assert out.atm_iv == {("NIFTY", EXPIRY.isoformat()): doc["atm_iv"]}  # kept as the day's

    one = option(STRIKES[2], "PE")
    again = full_ticks([one.instrument_token], [123.0], oi=OI[STRIKES[2]][1] + 750)
    assert step(enricher, stage, again, now + 0.5).messages == []  # within the interval
    [doc] = [orjson.loads(m) for m in step(enricher, stage, full_ticks([NIFTY_INDEX], [SPOT]), now + 1.0).messages]
    assert [r["strike"] for r in doc["rows"]] == [STRIKES[2]]
    assert doc["rows"][0]["pe"]["ltp"] == 123.0 and doc["rows"][0]["pe"]["oi_change"] == 750
    assert step(enricher, stage, full_ticks([NIFTY_INDEX], [SPOT]), now + 2.0).messages == []  # nothing ticked


def test_each_chain_that_ticked_goes_out_and_no_open_is_taken_before_0915() -> None:
    later = date.fromordinal(EXPIRY.toordinal() + 7)
    enricher, stage = stages([index(), *chain(), *chain(later)])
    now = at(9, 10)
    out = step(enricher, stage, Ticks.concat([whole_chain(now), whole_chain(now, later)]), now)
    assert sorted(orjson.loads(m)["expiry"] for m in out.messages) == [EXPIRY.isoformat(), later.isoformat()]
    assert out.oi_open == {}
    doc = orjson.loads(out.messages[0])
    assert all(r["ce"]["oi_change"] is None for r in doc["rows"])
    out = step(enricher, stage, whole_chain(at(9, 16), later), at(9, 16))
    assert [orjson.loads(m)["expiry"] for m in out.messages] == [later.isoformat()] and len(out.oi_open) == 10


async def test_the_publisher_sends_chains_and_keeps_the_first_open(redis, settings) -> None:
    names = Names(f"ticker:cs{np.random.default_rng().integers(1 << 30)}", settings.redis_namespace)
    publisher = Publisher(redis, names, PublishBreaker(1.0), StreamerMetrics(), batch_max=100, timeout=10.0)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(names.chain)
    try:
        day = date.today().isoformat()
        sent = Outgoing(chains=ChainOut([b'{"underlying":"NIFTY"}'], {b"11": b"500"}, {("NIFTY", "2030-01-31"): 0.15},
                                        day))
        assert await publisher.publish(sent)
        assert await publisher.publish(Outgoing(chains=ChainOut([], {b"11": b"900", b"12": b"7"},
                                                                {("NIFTY", "2030-01-31"): 0.16}, day)))
        message = None
        async with asyncio.timeout(60):
            while message is None:
                message = await pubsub.get_message(timeout=1)
        envelope = orjson.loads(message["data"])
        assert unwrap(envelope) == ([{"underlying": "NIFTY"}], StreamPosition(envelope["offset"], envelope["epoch"]))
        assert envelope["seq"] == 1 and CHAINS in envelope
        assert await redis.hgetall(names.oi_open(day)) == {b"11": b"500", b"12": b"7"}
        assert 0 < await redis.ttl(names.oi_open(day))
        assert await redis.hgetall(names.atm_iv("NIFTY", "2030-01-31")) == {day.encode(): b"0.16"}  # the last
    finally:
        await pubsub.aclose()
        await publisher.close()


def test_many_chains_are_spread_over_the_flushes_longest_waiting_first() -> None:
    expiries = [date.fromordinal(EXPIRY.toordinal() + 7 * i) for i in range(CHAINS_PER_FLUSH + 2)]
    enricher, stage = stages([index(), *(o for e in expiries for o in chain(e))])
    now = at(10)
    first = step(enricher, stage, Ticks.concat([whole_chain(now, e) for e in expiries]), now)
    assert len(first.messages) == CHAINS_PER_FLUSH
    rest = step(enricher, stage, full_ticks([NIFTY_INDEX], [SPOT]), now + 0.1).messages
    sent = [orjson.loads(m)["expiry"] for m in first.messages + rest]
    assert sorted(sent) == sorted(e.isoformat() for e in expiries)  # each once
