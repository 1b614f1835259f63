"""The dated market model: NSE's contract specifications and trading holidays as of any day, in the
stand-in's universe, market clock and history, and in the instrument dump the SDK reads."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta

import numpy as np
from kiteconnect import KiteConnect

from ticker.core import contract_specs as specs
from ticker.core.clock import IST
from ticker.core.holidays import NSE_HOLIDAYS
from ticker.infra.kitesim.config import SimConfig
from ticker.infra.kitesim.sim_state import SimState
from ticker.infra.kitesim.universe import KIND_CE, KIND_FUT, build_universe


def _futures(uni) -> dict[str, tuple[date, int, int]]:
    """tradingsymbol -> (expiry, lot, freeze) of every future."""
    rows = np.flatnonzero(uni.kind == KIND_FUT)
    return {str(uni.symbol[r]): (uni.expiry[r], int(uni.lot[r]), int(uni.freeze[r])) for r in rows}


def test_lot_sizes_follow_the_contract_series():
    # Mid-December 2025: the December series keeps the old lots, January 2026 on carries the new.
    fut = _futures(build_universe("small", date(2025, 12, 15)))
    assert fut["NIFTY25DECFUT"][1] == 75 and fut["NIFTY26JANFUT"][1] == 65
    assert fut["BANKNIFTY25DECFUT"][1] == 35 and fut["BANKNIFTY26JANFUT"][1] == 30
    assert fut["FINNIFTY25DECFUT"][1] == 65 and fut["FINNIFTY26JANFUT"][1] == 60
    assert fut["MIDCPNIFTY25DECFUT"][1] == 140 and fut["MIDCPNIFTY26JANFUT"][1] == 120
    uni = build_universe("small", date(2025, 12, 15))
    for row in np.flatnonzero(uni.kind == KIND_CE):  # options carry their own series' lot too
        name = uni.underlyings[uni.und[row]].name
        assert uni.lot[row] == specs.lot_size(name, uni.expiry[row])
    assert specs.lot_size("NIFTYNXT50", date(2026, 6, 30)) == 25
    assert specs.lot_size("BANKNIFTY", date(2025, 6, 26)) == 30  # before the July 2025 series


def test_freeze_quantities_follow_the_trading_day():
    november = {s: f for s, (_, _, f) in _futures(build_universe("small", date(2025, 11, 14))).items()}
    december = {s: f for s, (_, _, f) in _futures(build_universe("small", date(2025, 12, 15))).items()}
    assert november["BANKNIFTY25DECFUT"] == 900 and december["BANKNIFTY25DECFUT"] == 600
    assert november["FINNIFTY25DECFUT"] == 1800 and december["FINNIFTY25DECFUT"] == 1200
    assert december["NIFTY26JANFUT"] == 1800 and december["MIDCPNIFTY26JANFUT"] == 2800
    assert specs.freeze_quantity("NIFTYNXT50", date(2026, 6, 1)) == 600
    assert specs.max_order_quantity(1800, 65) == 1755 and specs.max_order_quantity(600, 30) == 600


def test_every_table_row_names_its_source():
    rows = [*specs.LOT_SIZES, *specs.FREEZE_QUANTITIES, *specs.EXPIRY_RULES, *specs.STATIC_SPECS.values()]
    assert rows and all(r.source for r in rows)
    assert {r.name for r in specs.LOT_SIZES} == set(specs.INDEX_NAMES) == set(specs.STATIC_SPECS)


def test_expiries_are_tuesdays_moved_off_nse_holidays():
    # January 2027: the monthly falls on Republic Day (Tuesday 26th) and moves to Monday the 25th.
    uni = build_universe("small", date(2027, 1, 4))
    fut = _futures(uni)
    assert fut["NIFTY27JANFUT"][0] == date(2027, 1, 25) and fut["BANKNIFTY27JANFUT"][0] == date(2027, 1, 25)
    expiries = {e for e in uni.expiry if e}
    assert date(2027, 1, 26) not in expiries and not expiries & NSE_HOLIDAYS
    assert all(e.weekday() == 1 or e + timedelta(days=1) in NSE_HOLIDAYS for e in expiries)
    # Only NIFTY lists weeklies; the other indices expire monthly.
    by_name: dict[str, set[date]] = {}
    for e, u in zip(uni.expiry, uni.und.tolist(), strict=True):
        if e:
            by_name.setdefault(uni.underlyings[u].name, set()).add(e)
    assert by_name["NIFTY"] >= {date(2027, 1, 5), date(2027, 1, 12), date(2027, 1, 19)}
    assert by_name["BANKNIFTY"] == {date(2027, 1, 25), date(2027, 2, 23), date(2027, 3, 30)}
    weekly = build_universe("small", date(2026, 11, 18))
    assert date(2026, 11, 23) in set(weekly.expiry) and date(2026, 11, 24) not in set(weekly.expiry)


def test_the_market_is_closed_and_history_empty_on_nse_holidays():
    state = SimState(SimConfig(seed=7, market_hours="nse"))
    holiday = datetime(2026, 11, 24, 11, 0, tzinfo=IST)     # a Tuesday in NSE's calendar
    assert not state.market.is_open(holiday.timestamp())
    assert state.market.is_open((holiday + timedelta(days=1)).timestamp())
    row = state.universe.row_of(256265)
    start, end = datetime(2026, 11, 23, 0, 0, tzinfo=IST), datetime(2026, 11, 25, 23, 0, tzinfo=IST)
    days = {c[0][:10] for c in state.history.candles(row, "60minute", start, end, False, end.timestamp())}
    assert days == {"2026-11-23", "2026-11-25"}


async def test_the_sdk_reads_todays_nse_contracts(kitesim):
    acc = kitesim.account
    kite = KiteConnect(acc.api_key, acc.access_token, root=kitesim.url)
    rows = await asyncio.to_thread(kite.instruments, "NFO")
    today = datetime.now(IST).date()
    assert rows and all(r["expiry"] >= today and r["expiry"] not in NSE_HOLIDAYS for r in rows)
    for r in rows:
        assert r["lot_size"] == specs.lot_size(r["name"], r["expiry"])
    strikes = sorted({r["strike"] for r in rows if r["name"] == "MIDCPNIFTY" and r["instrument_type"] == "CE"})
    assert {b - a for a, b in zip(strikes, strikes[1:], strict=False)} == {specs.STATIC_SPECS["MIDCPNIFTY"].strike_step}
