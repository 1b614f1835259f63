"""Enrichment and rendering alone: which forward each option is priced on, Greeks on a whole batch,
the latest-tick map, bars."""

from __future__ import annotations

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
from ticker.streamer.stages.batch import Chunk, Taken
from ticker.streamer.stages.enrich import Enricher
from ticker.streamer.stages.instrument_table import InstrumentTable
from ticker.streamer.stages.render import BatchRenderer, Outgoing

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
