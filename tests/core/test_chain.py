"""Option-chain analytics against plain-Python references, option by option.

Each figure is recomputed here with loops over a list of legs (dicts), sharing nothing with the
vectorised code but the definitions, on a small hand-built chain and on a generated 200-strike
chain priced from a smile with `core/greeks.py`. Tolerances: sums and ratios agree to 1e-12
relative (only the order of additions differs); the 25-delta IVs agree with the smile itself to
1e-4 (linear interpolation in delta across one 50-point strike step, plus tick rounding).
"""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import orjson
import pytest

from ticker.core import chain_stats
from ticker.core import greeks as gk
from ticker.core.chain import (
    LEG_COLUMNS,
    ChainGrid,
    ChainLegs,
    ChainMarket,
    LegLabels,
    chain_document,
    chain_snapshot,
    chain_summary,
)

NAN = math.nan
REL = 1e-12
COLUMNS = ("ltp", "bid", "ask", "volume", "oi", "oi_open", "iv", "delta", "gamma", "theta", "vega", "age")


# --- references: loops over legs as dicts -----------------------------------------------------------

def present(x: float | None) -> bool:
    return x is not None and not math.isnan(x)


def to_legs(rows: list[dict]) -> ChainLegs:
    cols = {c: np.array([r.get(c, NAN) for r in rows], dtype=float) for c in COLUMNS}
    return ChainLegs(strike=np.array([r["strike"] for r in rows], dtype=float),
                     is_call=np.array([r["call"] for r in rows], dtype=bool), **cols)


def ref_latest(rows: list[dict]) -> dict[tuple[float, bool], dict]:
    """strike and side → the leg, the later of two winning."""
    out = {}
    for r in rows:
        if present(r["strike"]) and r["strike"] > 0:
            out[(r["strike"], r["call"])] = r
    return out


def ref_atm(strikes: list[float], ref: float) -> float:
    best = None
    for k in strikes:
        if best is None or abs(k - ref) < abs(best - ref) or (abs(k - ref) == abs(best - ref) and k < best):
            best = k
    return best


def ref_pcr(rows: list[dict], col: str) -> float | None:
    calls = puts = 0.0
    for r in ref_latest(rows).values():
        v = r.get(col, NAN)
        if present(v) and v >= 0:
            if r["call"]:
                calls += v
            else:
                puts += v
    return puts / calls if calls > 0 else None


def ref_payout(rows: list[dict], settle: float) -> float:
    total = 0.0
    for r in ref_latest(rows).values():
        oi = r.get("oi", NAN)
        if not present(oi) or oi <= 0:
            continue
        total += oi * (max(0.0, settle - r["strike"]) if r["call"] else max(0.0, r["strike"] - settle))
    return total


def ref_max_pain(rows: list[dict]) -> float | None:
    legs = ref_latest(rows)
    if not any(present(r.get("oi", NAN)) and r["oi"] > 0 for r in legs.values()):
        return None
    best, best_pay = None, None
    for k in sorted({s for s, _ in legs}):
        pay = ref_payout(rows, k)
        if best_pay is None or pay < best_pay:
            best, best_pay = k, pay
    return best


def ref_wing(rows: list[dict], call: bool, target: float) -> float | None:
    legs = sorted((r for r in ref_latest(rows).values() if r["call"] == call
                   and present(r.get("delta", NAN)) and present(r.get("iv", NAN)) and r["iv"] > 0),
                  key=lambda r: r["strike"])
    if not legs:
        return None
    j = 0
    for i, r in enumerate(legs):
        if abs(r["delta"] - target) < abs(legs[j]["delta"] - target):
            j = i
    dj = legs[j]["delta"] - target
    if dj == 0:
        return legs[j]["iv"]
    other = None
    for i in (j - 1, j + 1):
        if 0 <= i < len(legs) and (legs[i]["delta"] - target) * dj < 0:
            if other is None or abs(legs[i]["delta"] - target) < abs(legs[other]["delta"] - target):
                other = i
    if other is None:
        return legs[j]["iv"]
    a, b = legs[j], legs[other]
    return a["iv"] + (target - a["delta"]) * (b["iv"] - a["iv"]) / (b["delta"] - a["delta"])


def ref_gex(rows: list[dict], price: float, mult: float) -> dict[float, float]:
    out: dict[float, float] = {}
    for (k, call), r in ref_latest(rows).items():
        g, oi = r.get("gamma", NAN), r.get("oi", NAN)
        if present(g) and present(oi):
            out[k] = out.get(k, 0.0) + (1 if call else -1) * g * oi * mult * price * price * 0.01
    return out


def ref_atm_iv(rows: list[dict], atm: float) -> float | None:
    legs = ref_latest(rows)
    ivs = [legs[(atm, c)]["iv"] for c in (True, False)
           if (atm, c) in legs and present(legs[(atm, c)].get("iv", NAN)) and legs[(atm, c)]["iv"] > 0]
    return sum(ivs) / len(ivs) if ivs else None


def close(got: float | None, want: float | None, rel: float = REL, abs_: float = 0.0) -> bool:
    if want is None or got is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=rel, abs_tol=abs_)


# --- a small chain by hand -------------------------------------------------------------------------

def leg(strike, call, **kw) -> dict:
    return {"strike": strike, "call": call, **kw}


HAND = [  # listed out of order; 23800 has no put, 24200 no call; a few values missing
    leg(24100, True, ltp=60.0, bid=59.5, ask=60.5, volume=900, oi=5000, oi_open=4000, iv=0.118, delta=0.36,
        gamma=0.0011, theta=-9.0, vega=11.0, age=0.4),
    leg(23800, True, ltp=260.0, bid=259.0, ask=261.0, volume=100, oi=1000, oi_open=1200, iv=0.135, delta=0.82,
        gamma=0.0006, theta=-6.0, vega=7.0, age=2.0),
    leg(24000, True, ltp=110.0, bid=109.5, ask=110.5, volume=1500, oi=8000, oi_open=7000, iv=0.124, delta=0.52,
        gamma=0.0013, theta=-11.0, vega=12.0, age=0.1),
    leg(24000, False, ltp=85.0, bid=84.5, ask=85.5, volume=1700, oi=9000, oi_open=9500, iv=0.130, delta=-0.47,
        gamma=0.0013, theta=-10.0, vega=12.0, age=0.2),
    leg(23900, True, ltp=180.0, volume=300, oi=2000, oi_open=NAN, iv=NAN, delta=NAN, gamma=NAN, age=5.0),
    leg(23900, False, ltp=55.0, bid=54.5, ask=55.5, volume=1200, oi=7000, oi_open=6000, iv=0.136, delta=-0.31,
        gamma=0.0011, theta=-9.5, vega=11.0, age=0.3),
    leg(24100, False, ltp=130.0, bid=129.0, ask=131.0, volume=500, oi=3000, oi_open=3000, iv=0.127, delta=-0.63,
        gamma=0.0011, theta=-8.0, vega=11.0, age=0.6),
    leg(24200, False, ltp=200.0, volume=50, oi=NAN, iv=0.125, delta=-0.78, gamma=0.0007, age=9.0),
    leg(0.0, False, ltp=1.0, oi=99999),  # a strike of 0 is no leg: ignored
]
MARKET = ChainMarket(underlying="NIFTY", spot=23990.0, forward=24030.0, t=5 / 365, multiplier=1.0)


def test_hand_chain_rows_by_strike_with_missing_legs_as_none():
    snap = chain_snapshot(to_legs(HAND), MARKET)
    assert [r.strike for r in snap.rows] == [23800.0, 23900.0, 24000.0, 24100.0, 24200.0]
    by = {r.strike: r for r in snap.rows}
    assert by[23800].pe is None and by[24200].ce is None
    assert by[24100].ce.oi_change == 1000 and by[23800].ce.oi_change == -200
    assert by[23900].ce.oi_change is None and by[23900].ce.iv is None and by[23900].ce.bid is None
    assert by[24200].pe.oi is None and by[24200].pe.ltp == 200.0
    assert by[24000].pe.model_dump() == {
        "ltp": 85.0, "bid": 84.5, "ask": 85.5, "volume": 1700, "oi": 9000, "oi_change": -500, "iv": 0.130,
        "delta": -0.47, "gamma": 0.0013, "theta": -10.0, "vega": 12.0, "age": 0.2}
    assert snap.strikes == 5


def test_hand_chain_figures_match_the_loops():
    snap = chain_summary(to_legs(HAND), MARKET)
    assert snap.atm_strike == ref_atm([23800, 23900, 24000, 24100, 24200], 24030.0) == 24000.0
    assert close(snap.atm_iv, (0.124 + 0.130) / 2)
    assert snap.straddle == 195.0
    assert close(snap.pcr_oi, ref_pcr(HAND, "oi")) and close(snap.pcr_oi, 19000 / 16000)
    assert close(snap.pcr_volume, ref_pcr(HAND, "volume"))
    assert snap.max_pain == ref_max_pain(HAND)
    call, put = ref_wing(HAND, True, 0.25), ref_wing(HAND, False, -0.25)
    assert close(snap.iv_25d_call, call) and close(snap.iv_25d_put, put)
    assert close(snap.rr_25d, call - put)
    assert close(snap.bf_25d, (call + put) / 2 - (0.124 + 0.130) / 2)
    assert close(snap.gex_total, sum(ref_gex(HAND, 24030.0, 1.0).values()))


def test_hand_chain_wings_interpolate_and_fall_back():
    # Calls: 0.36 (24100) is nearest 0.25 and nothing lies beyond it: its own IV. Puts: −0.31 (23900)
    # is nearest −0.25 and no put lies below it either: its own IV.
    snap = chain_summary(to_legs(HAND), MARKET)
    assert snap.iv_25d_call == 0.118 and snap.iv_25d_put == 0.136
    # A call at 24200 with delta 0.20 brackets 0.25 with 24100: interpolated, 0.2 of the way (0.36 → 0.20).
    more = [*HAND, leg(24200, True, iv=0.115, delta=0.20)]
    got = chain_summary(to_legs(more), MARKET).iv_25d_call
    assert close(got, 0.118 + (0.25 - 0.36) / (0.20 - 0.36) * (0.115 - 0.118))
    assert close(got, ref_wing(more, True, 0.25))


def test_wing_with_noisy_deltas_interpolates_towards_the_nearer_neighbour():
    # 0.26 (110) is nearest 0.25; both neighbours lie below 0.25, 0.22 (100) nearer than 0.20 (120).
    rows = [leg(100.0, True, delta=0.22, iv=0.30), leg(110.0, True, delta=0.26, iv=0.28),
            leg(120.0, True, delta=0.20, iv=0.26)]
    got = chain_summary(to_legs(rows), ChainMarket(forward=110.0)).iv_25d_call
    assert close(got, 0.28 + (0.25 - 0.26) / (0.22 - 0.26) * (0.30 - 0.28)) and close(got, ref_wing(rows, True, 0.25))
    exact = [*rows[:2], leg(120.0, True, delta=0.25, iv=0.26)]
    assert chain_summary(to_legs(exact), ChainMarket(forward=110.0)).iv_25d_call == 0.26


def test_gex_per_strike_matches_the_loop_and_skips_legs_without_gamma_or_oi():
    snap = chain_snapshot(to_legs(HAND), MARKET)
    ref = ref_gex(HAND, 24030.0, 1.0)
    for row in snap.rows:
        assert close(row.gex, ref.get(row.strike))
    # 24200's only leg has no OI: no GEX there; 23900's call has no gamma: the put alone counts.
    assert {r.strike: r.gex for r in snap.rows}[24200] is None
    assert close({r.strike: r.gex for r in snap.rows}[23900], -0.0011 * 7000 * 24030.0 ** 2 * 0.01)


# --- the generated 200-strike chain ------------------------------------------------------------------

F, SPOT, T, R = 24_013.0, 23_980.0, 9 / 365, 0.065
STEP = 50.0


def smile(k, skew: float = -1.0):
    """A smile in log-moneyness per √t: `skew` < 0 makes lower strikes dearer (a put skew)."""
    m = np.log(np.asarray(k, dtype=float) / F) / math.sqrt(T)
    return 0.12 + skew * 0.1 * m + 0.8 * 0.1 * m * m


def generated(seed: int = 7, skew: float = -1.0) -> list[dict]:
    """200 strikes × 2 sides, prices on the 0.05 tick, IV and Greeks solved back from them, a few
    legs dropped and a few values blanked (as a live chain has)."""
    rng = np.random.default_rng(seed)
    k = np.arange(F - 100 * STEP, F + 100 * STEP, STEP)
    k = np.round(k / STEP) * STEP
    strike = np.concatenate([k, k])
    call = np.r_[np.ones(k.size, bool), np.zeros(k.size, bool)]
    price = np.maximum(np.round(gk.price(F, strike, T, R, 0.0, smile(strike, skew), call, "black76") / 0.05) * 0.05,
                       0.05)
    g = gk.iv_and_greeks(price, F, strike, T, R, 0.0, call, "black76")
    oi = rng.integers(0, 200_000, strike.size) * 65.0
    rows = []
    for i in range(strike.size):
        rows.append(leg(float(strike[i]), bool(call[i]), ltp=float(price[i]), bid=float(price[i]) - 0.05,
                        ask=float(price[i]) + 0.05, volume=float(rng.integers(0, 50_000) * 65),
                        oi=float(oi[i]), oi_open=float(oi[i] - rng.integers(-5000, 5000) * 65),
                        age=float(rng.uniform(0, 3)),
                        **{n: float(g[n][i]) for n in ("iv", "delta", "gamma", "theta", "vega")}))
    for i in rng.choice(len(rows), 6, replace=False):
        rows[i] = {**rows[i], str(rng.choice(["iv", "oi", "gamma", "volume", "delta"])): NAN}
    drop = set(rng.choice(len(rows), 5, replace=False).tolist())
    rows = [r for i, r in enumerate(rows) if i not in drop]
    rng.shuffle(rows)
    return rows


GEN_MARKET = ChainMarket(underlying="NIFTY", spot=SPOT, forward=F, t=T, multiplier=1.0)


def test_generated_chain_figures_match_the_loops():
    rows = generated()
    snap = chain_snapshot(to_legs(rows), GEN_MARKET)
    strikes = sorted({r["strike"] for r in rows})
    assert [r.strike for r in snap.rows] == strikes and snap.strikes == len(strikes) >= 199
    atm = ref_atm(strikes, F)
    assert snap.atm_strike == atm == 24000.0
    assert close(snap.atm_iv, ref_atm_iv(rows, atm))
    assert close(snap.pcr_oi, ref_pcr(rows, "oi")) and close(snap.pcr_volume, ref_pcr(rows, "volume"))
    assert snap.max_pain == ref_max_pain(rows)
    assert close(snap.iv_25d_call, ref_wing(rows, True, 0.25))
    assert close(snap.iv_25d_put, ref_wing(rows, False, -0.25))
    gex = ref_gex(rows, F, 1.0)
    assert close(snap.gex_total, sum(gex.values()), rel=1e-9)
    for row in snap.rows:
        assert close(row.gex, gex.get(row.strike), rel=1e-9, abs_=1e-6)


def test_generated_chain_rows_carry_each_leg():
    rows = generated()
    latest = ref_latest(rows)
    snap = chain_snapshot(to_legs(rows), GEN_MARKET)
    for row in snap.rows:
        for side, quote in ((True, row.ce), (False, row.pe)):
            src = latest.get((row.strike, side))
            assert (quote is None) == (src is None)
            if src is None:
                continue
            for name in ("ltp", "bid", "ask", "iv", "delta", "gamma", "theta", "vega", "age"):
                want = src.get(name, NAN)
                assert getattr(quote, name) == (want if present(want) else None)
            want_change = src["oi"] - src["oi_open"] if present(src["oi"]) else None
            assert quote.oi_change == want_change


def delta_strike(call: bool, target: float, skew: float) -> float:
    """The strike whose delta on the smile is exactly `target`, by bisection."""
    lo, hi = F * 0.8, F * 1.2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        d = float(gk.greeks(F, mid, T, R, 0.0, smile(mid, skew), call, "black76")["delta"])
        # Call and put deltas both fall as the strike rises.
        lo, hi = (mid, hi) if d > target else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("skew", [-1.0, 1.0])
def test_25_delta_ivs_land_on_the_smile(skew: float):
    snap = chain_summary(to_legs(generated(skew=skew)), GEN_MARKET)
    want_call = float(smile(delta_strike(True, 0.25, skew), skew))
    want_put = float(smile(delta_strike(False, -0.25, skew), skew))
    assert abs(snap.iv_25d_call - want_call) < 1e-4
    assert abs(snap.iv_25d_put - want_put) < 1e-4
    assert abs(snap.atm_iv - float(smile(24000.0, skew))) < 1e-4


def test_risk_reversal_is_negative_under_a_put_skew_and_positive_under_a_call_skew():
    put_skew = chain_summary(to_legs(generated(skew=-1.0)), GEN_MARKET)
    call_skew = chain_summary(to_legs(generated(skew=1.0)), GEN_MARKET)
    assert put_skew.rr_25d < -0.01 and call_skew.rr_25d > 0.01
    # The smile's curvature is positive either way: both wings are dearer than ATM.
    assert put_skew.bf_25d > 0 and call_skew.bf_25d > 0


# --- max pain ----------------------------------------------------------------------------------------

def test_max_pain_is_the_strike_built_to_pay_nothing():
    """Calls held only at or above 23650 and puts only at or below it: settling there pays no one,
    and any other strike pays the holders at 23650 at least."""
    rng = np.random.default_rng(3)
    pin = 23650.0
    rows = []
    for r in generated():
        itm_side = r["strike"] < pin if r["call"] else r["strike"] > pin
        rows.append({**r, "oi": 0.0 if itm_side else float(rng.integers(1, 100_000) * 65)})
    rows += [leg(pin, True, oi=6500.0), leg(pin, False, oi=6500.0)]
    snap = chain_summary(to_legs(rows), GEN_MARKET)
    assert snap.max_pain == pin == ref_max_pain(rows)
    assert snap.max_pain != snap.atm_strike


def test_max_pain_ties_go_to_the_lower_strike_and_no_oi_has_none():
    # Calls at 100 and puts at 200, equal OI: every settlement from 100 to 200 pays the same.
    rows = [leg(100.0, True, oi=10.0), leg(150.0, True, oi=0.0), leg(200.0, False, oi=10.0)]
    assert [ref_payout(rows, s) for s in (100.0, 150.0, 200.0)] == [1000.0, 1000.0, 1000.0]
    assert chain_summary(to_legs(rows), ChainMarket(forward=150.0)).max_pain == 100.0
    empty = [leg(100.0, True, oi=0.0), leg(200.0, False, oi=NAN)]
    assert chain_summary(to_legs(empty), ChainMarket(forward=150.0)).max_pain is None


def test_payout_matches_the_loop():
    rows = generated(seed=11)
    grid = ChainGrid.of(to_legs(rows))
    payout = chain_stats.holder_payout(grid.strikes, grid.column("oi"))
    for k, got in zip(grid.strikes.tolist(), payout.tolist(), strict=True):
        assert math.isclose(got, ref_payout(rows, k), rel_tol=REL, abs_tol=1e-6)


# --- put-call ratio ------------------------------------------------------------------------------------

def test_pcr_is_none_without_call_totals():
    puts_only = [leg(100.0, False, oi=50.0, volume=5.0), leg(110.0, False, oi=70.0, volume=7.0)]
    snap = chain_summary(to_legs(puts_only), ChainMarket(forward=105.0))
    assert snap.pcr_oi is None and snap.pcr_volume is None
    zero_calls = [*puts_only, leg(100.0, True, oi=0.0, volume=NAN), leg(110.0, True, oi=NAN, volume=4.0)]
    snap = chain_summary(to_legs(zero_calls), ChainMarket(forward=105.0))
    assert snap.pcr_oi is None
    assert snap.pcr_volume == 12.0 / 4.0 == ref_pcr(zero_calls, "volume")


def test_pcr_without_puts_is_zero():
    calls_only = [leg(100.0, True, oi=50.0, volume=5.0)]
    snap = chain_summary(to_legs(calls_only), ChainMarket(forward=100.0))
    assert snap.pcr_oi == 0.0 and snap.pcr_volume == 0.0


# --- gamma exposure sign convention ------------------------------------------------------------------

def test_gex_dealers_long_calls_short_puts():
    calls = [leg(100.0, True, gamma=0.02, oi=1000.0), leg(110.0, True, gamma=0.01, oi=500.0)]
    puts = [leg(100.0, False, gamma=0.02, oi=1000.0)]
    market = ChainMarket(spot=99.0, forward=102.0, multiplier=65.0)
    assert chain_summary(to_legs(calls), market).gex_total > 0
    assert chain_summary(to_legs(puts), market).gex_total < 0
    # Equal call and put gamma·OI at one strike cancel.
    snap = chain_snapshot(to_legs([*calls, *puts]), market)
    assert snap.rows[0].gex == 0.0
    # Rupees of delta per 1% move, at the price the Greeks were taken against (Black-76: the forward).
    assert close(snap.gex_total, 0.01 * 500.0 * 65.0 * 102.0 ** 2 * 0.01)
    bsm = chain_summary(to_legs(calls), market.model_copy(update={"model": "bsm"}))
    assert close(bsm.gex_total, (0.02 * 1000 + 0.01 * 500) * 65.0 * 99.0 ** 2 * 0.01)


def test_gex_none_without_gamma():
    rows = [leg(100.0, True, oi=10.0), leg(100.0, False, oi=10.0, gamma=NAN)]
    snap = chain_snapshot(to_legs(rows), ChainMarket(forward=100.0))
    assert snap.gex_total is None and snap.rows[0].gex is None


# --- IV percentile ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("history", "today", "want"), [
    ([], 0.15, None),
    ([NAN, NAN], 0.15, None),
    ([0.10, 0.12, 0.14], NAN, None),
    ([0.10, 0.12, 0.14], 0.20, 100.0),
    ([0.10, 0.12, 0.14], 0.05, 0.0),
    ([0.10, 0.12, 0.14], 0.10, 0.0),             # equal is not below
    ([0.10, 0.12, 0.14, 0.16], 0.13, 50.0),
    ([0.10, NAN, 0.12, 0.14, 0.16], 0.13, 50.0),  # a day without a value is left out
    ([0.2], 0.3, 100.0),
])
def test_iv_percentile_edges(history, today, want):
    assert chain_stats.iv_percentile(np.array(history, dtype=float), today) == want


def test_iv_percentile_in_the_summary_uses_todays_atm_iv():
    history = np.linspace(0.10, 0.16, 61)
    snap = chain_summary(to_legs(HAND), MARKET, iv_history=history)
    atm = (0.124 + 0.130) / 2
    assert close(snap.iv_percentile, 100.0 * sum(1 for h in history.tolist() if h < atm) / 61)
    assert chain_summary(to_legs(HAND), MARKET).iv_percentile is None
    assert chain_summary(to_legs(HAND), MARKET, iv_history=np.array([])).iv_percentile is None


# --- ATM and NaN safety ----------------------------------------------------------------------------

def test_atm_tie_goes_to_the_lower_strike_and_spot_stands_in_for_a_missing_forward():
    rows = [leg(100.0, True, iv=0.2), leg(110.0, True, iv=0.3)]
    assert chain_summary(to_legs(rows), ChainMarket(forward=105.0)).atm_strike == 100.0
    assert chain_summary(to_legs(rows), ChainMarket(forward=105.01)).atm_strike == 110.0
    assert chain_summary(to_legs(rows), ChainMarket(spot=101.0, forward=108.0)).atm_strike == 110.0
    assert chain_summary(to_legs(rows), ChainMarket(spot=108.0, forward=NAN)).atm_strike == 110.0
    assert chain_summary(to_legs(rows), ChainMarket()).atm_strike is None
    blind = chain_summary(to_legs(rows), ChainMarket(spot=NAN, forward=NAN, t=NAN))
    assert blind.atm_strike is None and (blind.spot, blind.forward, blind.t) == (None, None, None)


def test_atm_iv_and_straddle_with_a_leg_missing_its_values():
    rows = [leg(100.0, True, ltp=5.0, iv=NAN), leg(100.0, False, ltp=NAN, iv=0.22)]
    snap = chain_summary(to_legs(rows), ChainMarket(forward=100.0))
    assert snap.atm_iv == 0.22 and snap.straddle is None
    rows = [leg(100.0, True, ltp=5.0, iv=0.2), leg(100.0, False, ltp=4.0, iv=0.22)]
    snap = chain_summary(to_legs(rows), ChainMarket(forward=100.0))
    assert close(snap.atm_iv, 0.21) and snap.straddle == 9.0


def test_unpriced_legs_do_not_poison_the_figures():
    rows = generated()
    blank = {n: NAN for n in COLUMNS}
    top = max(r["strike"] for r in rows)
    extra = [leg(top + STEP * (1 + i // 2), i % 2 == 0, **blank) for i in range(20)]  # 10 strikes, both sides
    clean, noisy = chain_summary(to_legs(rows), GEN_MARKET), chain_summary(to_legs([*rows, *extra]), GEN_MARKET)
    for name in ("max_pain", "atm_strike", "straddle", "atm_iv", "pcr_oi", "pcr_volume", "iv_25d_call", "iv_25d_put", "rr_25d", "bf_25d", "gex_total"):
        value = getattr(noisy, name)
        assert value is not None and math.isfinite(value)
        assert close(value, getattr(clean, name), rel=1e-12), name
    assert noisy.strikes == clean.strikes + 10


def test_a_repeated_leg_keeps_the_later_entry():
    rows = [leg(100.0, True, ltp=1.0, oi=10.0), leg(100.0, False, ltp=2.0), leg(100.0, True, ltp=3.0, oi=30.0)]
    snap = chain_snapshot(to_legs(rows), ChainMarket(forward=100.0))
    assert snap.rows[0].ce.ltp == 3.0 and snap.rows[0].ce.oi == 30 and snap.straddle == 5.0


def test_empty_chain_has_no_figures():
    legs = ChainLegs(strike=np.array([]), is_call=np.array([], dtype=bool))
    snap = chain_snapshot(legs, GEN_MARKET, iv_history=np.array([0.1]))
    assert snap.strikes == 0 and snap.rows == []
    figures = snap.model_dump(exclude={"underlying", "expiry", "spot", "forward", "t", "strikes", "rows"})
    assert set(figures.values()) == {None}


def test_snapshot_is_plain_json_without_nans():
    market = ChainMarket(**{**GEN_MARKET.model_dump(), "expiry": date(2026, 12, 8)})
    snap = chain_snapshot(to_legs(generated()), market)
    text = snap.model_dump_json()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["expiry"] == "2026-12-08" and data["underlying"] == "NIFTY"
    assert len(data["rows"]) == snap.strikes and set(data["rows"][0]) == {"strike", "ce", "pe", "gex"}


@pytest.mark.parametrize("bad", [
    {"strike": np.array([1.0, 2.0]), "is_call": np.array([1.0, 0.0])},
    {"strike": np.array([1.0, 2.0]), "is_call": np.array([True])},
    {"strike": np.array([1.0, 2.0]), "is_call": np.array([True, False]), "ltp": np.array([1.0])},
    {"strike": np.array([[1.0]]), "is_call": np.array([[True]])},
    {"strike": np.array(["a", "b"]), "is_call": np.array([True, False])},
])
def test_malformed_columns_are_refused(bad):
    with pytest.raises(ValueError):
        ChainLegs(**bad)


def test_the_plain_document_is_the_snapshot_dumped():
    rows = generated()
    market = GEN_MARKET.model_copy(update={"expiry": date(2026, 12, 29)})
    want = chain_snapshot(to_legs(rows), market, np.linspace(0.1, 0.2, 30)).model_dump(mode="json")
    got = chain_document(to_legs(rows), market, np.linspace(0.1, 0.2, 30))
    assert orjson.loads(orjson.dumps(got)) == want  # orjson refuses numpy scalars: none may be left


def test_labelled_legs_carry_token_symbol_and_age_in_ms():
    rows = generated()
    legs = to_legs(rows)
    legs = ChainLegs(**{**{name: getattr(legs, name) for name in ("strike", "is_call", *LEG_COLUMNS)},
                        "age": np.linspace(0.0004, 3.0, len(legs))})
    labels = LegLabels([1000 + i for i in range(len(legs))], [f"SYM{i}" for i in range(len(legs))])
    bare = chain_document(legs, GEN_MARKET)
    labelled = chain_document(legs, GEN_MARKET, labels=labels)
    assert {k: v for k, v in labelled.items() if k != "rows"} == {k: v for k, v in bare.items() if k != "rows"}
    index = {(float(k), bool(c)): i for i, (k, c) in enumerate(zip(legs.strike, legs.is_call, strict=True))}
    seen = 0
    for plain, dressed in zip(bare["rows"], labelled["rows"], strict=True):
        for side, is_call in (("ce", True), ("pe", False)):
            assert (plain[side] is None) == (dressed[side] is None)
            if plain[side] is None:
                continue
            i = index[(plain["strike"], is_call)]
            want = {k: v for k, v in plain[side].items() if k != "age"}
            want.update(token=1000 + i, tradingsymbol=f"SYM{i}", age_ms=round(plain[side]["age"] * 1000))
            assert dressed[side] == want
            seen += 1
    assert seen == len(legs)
    with pytest.raises(ValueError):
        chain_document(legs, GEN_MARKET, labels=LegLabels([1], ["X"]))
