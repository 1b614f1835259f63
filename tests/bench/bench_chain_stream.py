"""The streamer's chain stage at 27k ticks/s, as a share of one core.

A generated F&O universe of 27,000 options on two expiries each (four indices with 100-200 strikes
per expiry, stocks with 35) plus their spots, fed to the stage as the streamer feeds it: a batch
every 100 ms (the batch window) of 2,700 full-mode ticks drawn at random across the universe,
enriched first (IV and Greeks, not timed), then `ChainStage.observe` on a simulated clock with the
default interval (1 s) and at most CHAINS_PER_FLUSH chains per flush. Measured: the CPU time of
this thread inside `observe` (keeping every leg's state, picking the chains due, computing and
serialising them) per simulated second of ticks: the share of one core the stage adds to the
streamer. Anchor, same batches: the enrichment's CPU per second (the streamer's own per-tick work).
No I/O: the stage reads nothing and its messages go out with the flush's ticks.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

import numpy as np

from tests.bench.harness import Report, fmt_time
from ticker.core import greeks as gk
from ticker.core.indices import index_symbol
from ticker.core.instruments import SEG_INDICES, SEG_NFO, SEG_NSE, Instrument, make_token, option_symbol
from ticker.core.wire import Ticks
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.stages.batch import Chunk, Taken
from ticker.streamer.stages.chain_stream import CHAINS_PER_FLUSH, ChainStage
from ticker.streamer.stages.enrich import Enricher
from ticker.streamer.stages.instrument_table import InstrumentTable

OPTIONS, TICKS_PER_SECOND, WINDOW = 27_000, 27_000, 0.1
INTERVAL = 1.0  # CHAIN_INTERVAL_MS's default
WARMUP_SECONDS, SECONDS = 2, 10
GOAL_SHARE = 0.03
RATE, VOL = 0.065, 0.18
INDICES = (("NIFTY", 24_000.0, 50.0, 200), ("BANKNIFTY", 52_000.0, 100.0, 150),
           ("FINNIFTY", 23_500.0, 50.0, 100), ("MIDCPNIFTY", 12_500.0, 25.0, 100))
STOCK_STRIKES = 35
EXPIRIES = (date.today() + timedelta(days=6), date.today() + timedelta(days=34))


class Universe:
    """The instruments, and each one's fair price (options priced off their spot at VOL)."""

    def __init__(self) -> None:
        self.listed: list[Instrument] = []
        prices: list[float] = []
        self._next_token = 100_000
        for name, spot, step, strikes in INDICES:
            self._underlying(name, spot, step, strikes, prices, index=True)
        i = 0
        while sum(1 for x in self.listed if x.segment == "NFO-OPT") < OPTIONS:
            spot = 200.0 + 97.0 * (i % 40)
            self._underlying(f"STK{i:03d}", spot, max(2.5, round(spot / 100) * 2.5), STOCK_STRIKES, prices,
                             index=False)
            i += 1
        self.prices = np.array(prices)
        self.tokens = np.array([x.instrument_token for x in self.listed])
        self.options = sum(1 for x in self.listed if x.segment == "NFO-OPT")
        self.chains = len(INDICES) * len(EXPIRIES) + i * len(EXPIRIES)

    def _token(self, segment: int) -> tuple[int, int]:
        self._next_token += 1
        return make_token(self._next_token, segment), self._next_token

    def _underlying(self, name: str, spot: float, step: float, strikes: int, prices: list[float], *,
                    index: bool) -> None:
        token, et = self._token(SEG_INDICES if index else SEG_NSE)
        self.listed.append(Instrument(instrument_token=token, exchange_token=et, tradingsymbol=index_symbol(name),
                                      name=index_symbol(name) if index else name, tick_size=0.05,
                                      instrument_type="EQ", segment="INDICES" if index else "NSE",
                                      exchange="NSE"))
        prices.append(spot)
        ks = np.round(spot / step) * step + step * np.arange(-(strikes // 2), strikes - strikes // 2)
        for expiry in EXPIRIES:
            t = (expiry - date.today()).days / 365.0
            for k in ks[ks > 0].tolist():
                for kind in ("CE", "PE"):
                    token, et = self._token(SEG_NFO)
                    self.listed.append(Instrument(
                        instrument_token=token, exchange_token=et, tradingsymbol=option_symbol(name, expiry, k, kind),
                        name=name, expiry=expiry, strike=k, lot_size=50, tick_size=0.05, instrument_type=kind,
                        segment="NFO-OPT", exchange="NFO"))
                    fair = float(gk.price(spot, np.array([k]), t, RATE, 0.0, VOL, np.array([kind == "CE"]),
                                          "bsm")[0])
                    prices.append(max(0.05, round(fair / 0.05) * 0.05))

    def batch(self, rng: np.random.Generator, size: int, now: float) -> Ticks:
        """`size` full-mode ticks of instruments drawn at random, prices a tick or two off fair."""
        pick = rng.integers(0, len(self.listed), size)
        price = np.maximum(0.05, np.round(self.prices[pick] / 0.05 + rng.integers(-2, 3, size)) * 0.05)
        levels = np.arange(1, 6) * 0.05
        stamp = int(now)
        return Ticks.build(token=self.tokens[pick], mode="full", last_price=price,
                           volume_traded=rng.integers(0, 1_000_000, size), oi=rng.integers(0, 5_000_000, size),
                           exchange_timestamp=stamp, last_trade_time=stamp,
                           depth_buy_price=np.maximum(np.round(price[:, None] - levels, 2), 0),
                           depth_sell_price=np.round(price[:, None] + levels, 2),
                           depth_buy_quantity=np.full((size, 5), 75), depth_sell_quantity=np.full((size, 5), 150),
                           depth_buy_orders=np.full((size, 5), 3), depth_sell_orders=np.full((size, 5), 4))


def run(report: Report) -> None:
    universe = Universe()
    table = InstrumentTable(universe.listed)
    enricher = Enricher(table, model="black76", rate=RATE, dividend_yield=0.0, bar_interval=60,
                        metrics=StreamerMetrics())
    stage = ChainStage(table, INTERVAL, model="black76")
    rng = np.random.default_rng(27)
    per_batch = round(TICKS_PER_SECOND * WINDOW)
    start = time.time()
    stage_cpu = enrich_cpu = 0.0
    messages = 0
    batches = round((WARMUP_SECONDS + SECONDS) / WINDOW)
    for k in range(batches):
        now = start + k * WINDOW
        taken = Taken([Chunk(universe.batch(rng, per_batch, now), now, "a")], [])
        t0 = time.thread_time()
        enriched = enricher.process(taken, now)
        t1 = time.thread_time()
        out = stage.observe(enriched, now)
        t2 = time.thread_time()
        if k >= WARMUP_SECONDS / WINDOW:  # the first flushes record every opening OI: once a day
            enrich_cpu, stage_cpu, messages = enrich_cpu + t1 - t0, stage_cpu + t2 - t1, messages + len(out.messages)
    share, anchor = stage_cpu / SECONDS, enrich_cpu / SECONDS
    report.row(f"streamer chain stage at {TICKS_PER_SECOND // 1000}k ticks/s ({universe.options:,} options in "
               f"{universe.chains} chains, {messages / SECONDS:.0f} chains computed per s, at most "
               f"{CHAINS_PER_FLUSH} per 100 ms flush): CPU per second of ticks",
               f"{fmt_time(share)}/s = {100 * share:.2f}% of one core",
               f"enriching the same ticks {fmt_time(anchor)}/s", anchor / share if share else None,
               f"<= {100 * GOAL_SHARE:.0f}% of one core", share <= GOAL_SHARE)
