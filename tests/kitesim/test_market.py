"""The market model and history: the pricing contract (Black-76 on each expiry's forward at
`model_vol`), deterministic candles in session minutes, Kite's per-interval day limits."""

from __future__ import annotations

import asyncio
import math
import re
import time
import warnings
from datetime import date, datetime, timedelta

import numpy as np
import pytest
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from ticker.core.clock import IST, previous_trading_day
from ticker.core.holidays import NSE_HOLIDAYS
from ticker.infra.kitesim.candles import MAX_DAYS
from ticker.infra.kitesim.config import SimConfig
from ticker.infra.kitesim.market import YEAR_SECONDS, model_vol
from ticker.infra.kitesim.sim_state import SimState
from ticker.infra.kitesim.universe import KIND_CE, KIND_FUT, KIND_PE, build_universe

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from py_vollib.black.implied_volatility import implied_volatility as black_iv

R = 0.10


def _atm_rows(state: SimState, kind: int, n: int = 6) -> np.ndarray:
    """Options of NIFTY near the money with at least two days to run."""
    uni, m = state.universe, state.market
    t = (uni.expiry_ts - time.time()) / YEAR_SECONDS
    rows = np.flatnonzero((uni.kind == kind) & (uni.und == 0) & (t > 2 / 365))
    return rows[np.argsort(np.abs(uni.strike[rows] - m.spots[0]))][:n]


def _iv(price: float, fwd: float, strike: float, t: float, call: bool) -> float:
    return black_iv(price, fwd, strike, R, t, "c" if call else "p")


def test_model_vol_is_a_smile_with_put_skew():
    f, t = 25_000.0, 0.05
    atm = model_vol("NIFTY", f, f, t)
    assert isinstance(atm, float) and 0.05 < atm < 0.5
    low, high = model_vol("NIFTY", f * math.exp(-0.08), f, t), model_vol("NIFTY", f * math.exp(0.08), f, t)
    assert low > atm > high  # put skew
    assert (low + high) / 2 > atm  # and a smile's curvature
    arr = model_vol("BANKNIFTY", np.array([50_000.0, 60_000.0]), 55_000.0, np.array([0.1, 0.2]))
    assert arr.shape == (2,)
    with pytest.raises(KeyError):
        model_vol("NOPE", 1.0, 1.0, 0.1)


@pytest.mark.parametrize("kind", [KIND_CE, KIND_PE])
def test_live_option_prices_give_back_model_vol(kind):
    state = SimState(SimConfig(seed=7))
    now = time.time()
    uni, m = state.universe, state.market
    for row in _atm_rows(state, kind):
        t = (uni.expiry_ts[row] - now) / YEAR_SECONDS
        fwd = m.spots[uni.und[row]] * math.exp(R * t)
        price = float(m.price_rows(np.array([row]), now)[0])
        assert abs(price / 0.05 - round(price / 0.05)) < 1e-6  # on the tick grid
        vol = model_vol("NIFTY", uni.strike[row], fwd, t)
        assert _iv(price, fwd, uni.strike[row], t, kind == KIND_CE) == pytest.approx(vol, abs=2e-3)


def test_futures_trade_at_the_forward():
    state = SimState(SimConfig(seed=7))
    now = time.time()
    uni, m = state.universe, state.market
    for row in np.flatnonzero(uni.kind == KIND_FUT)[:4]:
        t = (uni.expiry_ts[row] - now) / YEAR_SECONDS
        fwd = m.spots[uni.und[row]] * math.exp(R * t)
        assert float(m.price_rows(np.array([row]), now)[0]) == pytest.approx(fwd, abs=0.026)


def test_market_walks_while_open_and_holds_when_closed():
    state = SimState(SimConfig(seed=7, market_hours="nse"))
    m = state.market
    saturday = datetime(2026, 11, 21, 11, 0, tzinfo=IST).timestamp()
    monday = datetime(2026, 11, 23, 11, 0, tzinfo=IST).timestamp()
    m.last_step = saturday - 10
    before = m.spots.copy()
    assert not m.step(saturday) and (m.spots == before).all()
    m.last_step = monday - 10
    assert m.step(monday) and (m.spots != before).all()


def test_universe_profiles_and_expiries():
    today = date(2026, 11, 21)
    small = build_universe("small", today)
    expiries = {e for e in small.expiry if e}
    # Tuesdays, except where NSE closes on the Tuesday: then the trading day before (24 Nov 2026).
    assert min(expiries) >= today and date(2026, 11, 23) in expiries
    assert all(e.weekday() == 1 or e + timedelta(days=1) in NSE_HOLIDAYS for e in expiries)
    nifty_exp = {e for e, u in zip(small.expiry, small.und.tolist(), strict=True) if e and u == 0}
    assert len(nifty_exp) >= 4
    monthly_exp = {e for e, k in zip(small.expiry, small.kind.tolist(), strict=True) if k == KIND_FUT}
    for sym, e, k, u in zip(small.symbol, small.expiry, small.kind.tolist(), small.und.tolist(), strict=True):
        if k == KIND_CE and u == 0:
            pattern = r"NIFTY\d\d[A-Z]{3}\d+CE" if e in monthly_exp else r"NIFTY\d\d[1-9OND]\d\d\d+CE"
            assert re.fullmatch(pattern, sym), sym
    assert nifty_exp - monthly_exp  # there are weeklies
    full = build_universe("full", today)
    assert 80_000 <= len(full) <= 100_000
    assert len(set(full.token.tolist())) == len(full)


def test_history_is_deterministic_and_in_session():
    a = SimState(SimConfig(seed=7))
    b = SimState(SimConfig(seed=7))
    row = int(_atm_rows(a, KIND_CE, 1)[0])
    end = datetime.now(IST).replace(microsecond=0)
    start = end - timedelta(days=6)
    one = a.history.candles(row, "minute", start, end, True, time.time())
    two = b.history.candles(row, "minute", start + timedelta(days=3), end, True, time.time())
    assert one[-len(two):] == two and len(one) > len(two) > 0
    for candle in one:
        ts = datetime.strptime(candle[0], "%Y-%m-%dT%H:%M:%S%z")
        assert ts.weekday() < 5 and (9, 15) <= (ts.hour, ts.minute) <= (15, 29)
        assert candle[3] <= min(candle[1], candle[4]) <= max(candle[1], candle[4]) <= candle[2]
        assert len(candle) == 7
    other = SimState(SimConfig(seed=8)).history.candles(row, "minute", start, end, True, time.time())
    assert other != one


def test_history_option_closes_give_back_model_vol():
    state = SimState(SimConfig(seed=7))
    uni = state.universe
    row = int(_atm_rows(state, KIND_PE, 1)[0])
    und_row = uni.row_of(256265)
    end = datetime.now(IST)
    start = end - timedelta(days=4)
    opt = state.history.candles(row, "5minute", start, end, False, time.time())
    und = {c[0]: c[4] for c in state.history.candles(und_row, "5minute", start, end, False, time.time())}
    checked = 0
    for stamp, *_, close, _vol in opt[:: max(1, len(opt) // 20)]:
        ts = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        t = (uni.expiry_ts[row] - ts) / YEAR_SECONDS
        fwd = und[stamp] * math.exp(R * t)
        if close < 5:  # too few ticks of time value to say much
            continue
        vol = model_vol("NIFTY", uni.strike[row], fwd, t)
        assert _iv(close, fwd, uni.strike[row], t, False) == pytest.approx(vol, abs=3e-3)
        checked += 1
    assert checked >= 5


def test_index_history_has_no_volume_and_days_are_midnight_stamped():
    state = SimState(SimConfig(seed=7))
    row = state.universe.row_of(256265)
    end = datetime.now(IST)
    days = state.history.candles(row, "day", end - timedelta(days=30), end, True, time.time())
    assert len(days) >= 15
    assert all(c[0].endswith("T00:00:00+0530") and c[5] == 0 and c[6] == 0 for c in days)


async def test_historical_data_via_sdk_with_oi(kitesim):
    acc = kitesim.account
    kite = KiteConnect(acc.api_key, acc.access_token, root=kitesim.url)
    row = int(_atm_rows(kitesim.state, KIND_CE, 1)[0])
    token = int(kitesim.state.universe.token[row])
    to = datetime.now()
    candles = await asyncio.to_thread(kite.historical_data, token, to - timedelta(days=7), to, "15minute",
                                      oi=True)
    assert candles and all("oi" in c and c["oi"] > 0 and c["volume"] >= 0 for c in candles)
    assert candles[0]["date"].utcoffset() == timedelta(hours=5, minutes=30)
    no_oi = await asyncio.to_thread(kite.historical_data, token, to - timedelta(days=7), to, "15minute")
    assert "oi" not in no_oi[0] and [c["close"] for c in no_oi] == [c["close"] for c in candles]


@pytest.mark.parametrize("interval", sorted(MAX_DAYS))
async def test_history_day_limits(kitesim, interval):
    acc = kitesim.account
    kite = KiteConnect(acc.api_key, acc.access_token, root=kitesim.url)
    to = date.today() + timedelta(days=3000)  # in the future: the limit is checked, no candles exist
    limit = MAX_DAYS[interval]
    ok = await asyncio.to_thread(kite.historical_data, 256265, str(to - timedelta(days=limit)), str(to), interval)
    assert isinstance(ok, list)
    with pytest.raises(kex.InputException, match=f"interval exceeds max limit: {limit} days"):
        await asyncio.to_thread(kite.historical_data, 256265, str(to - timedelta(days=limit + 1)), str(to),
                                interval)


@pytest.mark.parametrize("path, match", [
    ("/instruments/historical/256265/2minute?from=2025-01-01&to=2025-01-02", "interval"),
    ("/instruments/historical/256265/minute?from=yesterday&to=2025-01-02", "from"),
    ("/instruments/historical/256265/minute?from=2025-01-03&to=2025-01-02", "range"),
    ("/instruments/historical/1/minute?from=2025-01-01&to=2025-01-02", "instrument_token"),
    ("/instruments/historical/abc/minute?from=2025-01-01&to=2025-01-02", "instrument_token"),
])
async def test_history_bad_requests(kitesim, path, match):
    import requests

    acc = kitesim.account
    r = await asyncio.to_thread(requests.get, kitesim.url + path,
                                headers={"Authorization": f"token {acc.api_key}:{acc.access_token}", "X-Kite-Version": "3"})
    assert r.status_code == 400 and r.json()["error_type"] == "InputException" and match in r.json()["message"]


async def test_bare_to_date_covers_the_whole_day(kitesim):
    import requests

    acc = kitesim.account
    day = previous_trading_day(datetime.now(IST).date())
    r = await asyncio.to_thread(
        requests.get, f"{kitesim.url}/instruments/historical/256265/60minute?from={day}&to={day}",
        headers={"Authorization": f"token {acc.api_key}:{acc.access_token}", "X-Kite-Version": "3"})
    stamps = [c[0][11:16] for c in r.json()["data"]["candles"]]
    assert stamps == ["09:15", "10:15", "11:15", "12:15", "13:15", "14:15", "15:15"]
