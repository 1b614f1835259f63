"""Chain analytics for one expiry, against what the streamer already spends on the same legs: IV
and Greeks for every option of the chain in one batch (the anchor). NIFTY-like: strikes every 50
points around the forward, a put skew, prices on the 0.05 tick."""

from __future__ import annotations

import numpy as np

from tests.bench.harness import Report, best_of, fmt_time
from ticker.core import greeks as gk
from ticker.core.chain import ChainLegs, ChainMarket, chain_snapshot, chain_summary

FORWARD, T, RATE = 24_013.0, 9 / 365, 0.065
STRIKES = (50, 200, 400)


def legs(n_strikes: int) -> tuple[ChainLegs, dict[str, np.ndarray]]:
    rng = np.random.default_rng(n_strikes)
    k = np.round((FORWARD + 50.0 * np.arange(-n_strikes // 2, n_strikes - n_strikes // 2)) / 50.0) * 50.0
    strike = np.concatenate([k, k])
    call = np.r_[np.ones(k.size, bool), np.zeros(k.size, bool)]
    m = np.log(strike / FORWARD) / np.sqrt(T)
    sigma = 0.12 - 0.1 * m + 0.08 * m * m
    price = np.maximum(np.round(gk.price(FORWARD, strike, T, RATE, 0.0, sigma, call, "black76") / 0.05) * 0.05, 0.05)
    inputs = {"price": price, "strike": strike, "call": call}
    g = gk.iv_and_greeks(price, FORWARD, strike, T, RATE, 0.0, call, "black76")
    oi = rng.integers(0, 200_000, strike.size) * 65.0
    chain = ChainLegs(strike=strike, is_call=call, ltp=price, bid=price - 0.05, ask=price + 0.05,
                      volume=rng.integers(0, 50_000, strike.size) * 65.0, oi=oi, oi_open=oi * 0.95,
                      iv=g["iv"], delta=g["delta"], gamma=g["gamma"], theta=g["theta"], vega=g["vega"],
                      age=rng.uniform(0, 3, strike.size))
    return chain, inputs


def run(report: Report) -> None:
    market = ChainMarket(underlying="NIFTY", spot=23_980.0, forward=FORWARD, t=T)
    history = np.random.default_rng(0).uniform(0.09, 0.2, 250)
    for n in STRIKES:
        chain, c = legs(n)
        anchor = best_of(lambda c=c: gk.iv_and_greeks(c["price"], FORWARD, c["strike"], T, RATE, 0.0, c["call"],
                                                      "black76"), repeat=7, number=5)
        summary = best_of(lambda chain=chain: chain_summary(chain, market, history), repeat=7, number=5)
        snapshot = best_of(lambda chain=chain: chain_snapshot(chain, market, history).model_dump_json(),
                           repeat=5, number=2)
        base = f"IV + Greeks for the same {2 * n} legs {fmt_time(anchor)}"
        report.row(f"chain summary (figures only), {n} strikes", fmt_time(summary), base, anchor / summary,
                   "info")
        report.row(f"chain snapshot with rows, as JSON, {n} strikes", fmt_time(snapshot), base, anchor / snapshot,
                   "info")
