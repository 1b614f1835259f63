"""Orders through the real SDK: validation, fills, modify/cancel, tags, postbacks, rate limit.
(Kite's 2026 order rules have their own tests in test_rules2026.py.)"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import orjson
import pytest
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from ticker.infra.kitesim.api_limits import SlidingLimit
from ticker.infra.kitesim.postback_sender import postback_checksum
from ticker.infra.kitesim.universe import KIND_CE


def _kite(sim, i: int = 0) -> KiteConnect:
    acc = sim.accounts[i]
    return KiteConnect(acc.api_key, acc.access_token, root=sim.url)


def _option(sim) -> tuple[str, float]:
    """A liquid-looking call near the money: (tradingsymbol, current price)."""
    uni, m = sim.state.universe, sim.state.market
    rows = np.flatnonzero((uni.kind == KIND_CE) & (uni.und == 0))
    row = rows[np.argmin(np.abs(uni.strike[rows] - m.spots[0]))]
    return str(uni.symbol[row]), float(m.price_rows(np.array([row]))[0])


def _lot(sim, symbol: str) -> int:
    """The contract's lot size from the stand-in's instrument master."""
    uni = sim.state.universe
    return int(uni.lot[uni.row_of_symbol[("NFO", symbol)]])


def _place(kite: KiteConnect, symbol: str, lot: int, **kw):
    args = {"variety": "regular", "exchange": "NFO", "tradingsymbol": symbol, "transaction_type": "BUY",
            "quantity": lot, "product": "NRML", "order_type": "MARKET", "market_protection": -1, **kw}
    return asyncio.to_thread(kite.place_order, **args)


async def test_market_order_fills_with_tag_and_trade(kitesim):
    kite = _kite(kitesim)
    symbol, _ = _option(kitesim)
    lot = _lot(kitesim, symbol)
    order_id = await _place(kite, symbol, lot, tag="abc123")
    orders = await asyncio.to_thread(kite.orders)
    [order] = [o for o in orders if o["order_id"] == order_id]
    assert order["status"] == "COMPLETE" and order["tag"] == "abc123" and order["filled_quantity"] == lot
    assert order["average_price"] > 0 and order["market_protection"] == -1
    trades = await asyncio.to_thread(kite.order_trades, order_id)
    assert trades[0]["quantity"] == lot and trades[0]["average_price"] == order["average_price"]
    history = await asyncio.to_thread(kite.order_history, order_id)
    assert [h["status"] for h in history] == ["OPEN", "COMPLETE"]
    positions = await asyncio.to_thread(kite.positions)
    assert positions["net"][0]["quantity"] == lot
    assert kitesim.state.counters.orders_by_tag["abc123"] == 1
    assert [o["order_id"] for o in kitesim.state.orders_with_tag("abc123")] == [order_id]


async def test_trades_and_profile_through_the_sdk_are_the_order_books_fills(kitesim):
    """`kite.trades()`, `kite.order_trades()` and `kite.profile()` in Kite's shapes: each fill names its
    order and the order's exchange order id, with the order book's quantity and average price."""
    kite = _kite(kitesim)
    symbol, _ = _option(kitesim)
    lot = _lot(kitesim, symbol)
    filled = await _place(kite, symbol, lot, tag="fills1")
    resting = await _place(kite, symbol, lot, order_type="LIMIT", price=0.05)
    [order] = [o for o in await asyncio.to_thread(kite.orders) if o["order_id"] == filled]
    trades = await asyncio.to_thread(kite.trades)
    assert trades == await asyncio.to_thread(kite.order_trades, filled)
    [trade] = trades
    assert trade["order_id"] == filled and trade["exchange_order_id"] == order["exchange_order_id"]
    assert trade["quantity"] == order["filled_quantity"] == lot
    assert trade["average_price"] == order["average_price"] > 0
    for key in ("exchange", "tradingsymbol", "instrument_token", "product", "transaction_type"):
        assert trade[key] == order[key], key
    assert trade["trade_id"] and trade["fill_timestamp"] == trade["exchange_timestamp"]  # parsed by the SDK
    assert trade["fill_timestamp"] >= order["order_timestamp"]
    assert trade["order_timestamp"] == order["order_timestamp"].strftime("%H:%M:%S")  # Kite sends the time only
    assert await asyncio.to_thread(kite.order_trades, resting) == []
    with pytest.raises(kex.OrderException):
        await asyncio.to_thread(kite.order_trades, "999999999999")
    profile = await asyncio.to_thread(kite.profile)
    assert profile["user_id"] == kitesim.account.user_id and profile["broker"] == "ZERODHA"
    assert {"email", "user_name", "exchanges", "products", "order_types"} <= set(profile)


async def test_limit_rests_then_fills_when_crossed_and_cancel(kitesim):
    kite = _kite(kitesim)
    symbol, _ = _option(kitesim)
    lot = _lot(kitesim, symbol)
    resting = await _place(kite, symbol, lot, order_type="LIMIT", price=0.05)
    assert (await asyncio.to_thread(kite.order_history, resting))[-1]["status"] == "OPEN"
    # a buy limit far above the market is crossed at once
    await asyncio.to_thread(kite.modify_order, "regular", resting, price=100_000.0)
    last = (await asyncio.to_thread(kite.order_history, resting))[-1]
    assert last["status"] == "COMPLETE" and last["average_price"] < 100_000
    other = await _place(kite, symbol, lot, order_type="LIMIT", price=0.05, transaction_type="BUY")
    assert await asyncio.to_thread(kite.cancel_order, "regular", other) == other
    [o] = [o for o in await asyncio.to_thread(kite.orders) if o["order_id"] == other]
    assert o["status"] == "CANCELLED" and o["cancelled_quantity"] == lot
    with pytest.raises(kex.OrderException):
        await asyncio.to_thread(kite.cancel_order, "regular", other)
    with pytest.raises(kex.OrderException):
        await asyncio.to_thread(kite.modify_order, "regular", resting, price=1.0)


async def test_stop_orders_wait_for_their_trigger(kitesim):
    kite = _kite(kitesim)
    symbol, price = _option(kitesim)
    far = round(price * 3 / 0.05) * 0.05
    sl = await _place(kite, symbol, _lot(kitesim, symbol), order_type="SL-M", trigger_price=far)
    assert (await asyncio.to_thread(kite.order_history, sl))[-1]["status"] == "TRIGGER PENDING"
    near = 0.05
    await asyncio.to_thread(kite.modify_order, "regular", sl, trigger_price=near)
    assert (await asyncio.to_thread(kite.order_history, sl))[-1]["status"] == "COMPLETE"


@pytest.mark.parametrize("change, match", [
    ({"quantity": 10}, "lot size"),
    ({"quantity": 0}, "quantity"),
    ({"order_type": "LIMIT"}, "price"),
    ({"order_type": "LIMIT", "price": 10.03}, "Tick size"),
    ({"order_type": "SL", "price": 10.0}, "trigger"),
    ({"order_type": "SL-M"}, "trigger"),
    ({"transaction_type": "HOLD"}, "transaction_type"),
    ({"product": "XYZ"}, "product"),
    ({"tradingsymbol": "NOSUCH25NOV1CE"}, "does not exist"),
    ({"tag": "x" * 21}, "tag"),
    ({"exchange": "NYSE"}, "exchange"),
])
async def test_invalid_orders_raise_input_exception(kitesim, change, match):
    kite = _kite(kitesim)
    symbol, _ = _option(kitesim)
    with pytest.raises(kex.InputException, match=match) as err:
        await _place(kite, change.pop("tradingsymbol", symbol), _lot(kitesim, symbol), **change)
    assert err.value.code == 400
    assert kitesim.state.orders.orders == {}


async def test_index_is_not_tradable_and_cnc_on_nfo_is_rejected(kitesim):
    kite = _kite(kitesim)
    with pytest.raises(kex.OrderException):
        await asyncio.to_thread(kite.place_order, variety="regular", exchange="NSE", tradingsymbol="NIFTY 50",
                                transaction_type="BUY", quantity=1, product="MIS", order_type="MARKET",
                                market_protection=-1)
    symbol, _ = _option(kitesim)
    order_id = await _place(kite, symbol, _lot(kitesim, symbol), product="CNC")
    [o] = await asyncio.to_thread(kite.orders)
    assert o["order_id"] == order_id and o["status"] == "REJECTED" and "CNC" in o["status_message"]


async def test_orders_outside_nse_hours_are_refused(kitesim_factory):
    sim = await kitesim_factory(market_hours="nse")
    if sim.state.market.is_open(__import__("time").time()):
        pytest.skip("NSE is open right now; the closed-market refusal cannot be shown")
    symbol, _ = _option(sim)
    with pytest.raises(kex.InputException, match="closed"):
        await _place(_kite(sim), symbol, _lot(sim, symbol))


async def test_order_postbacks_reach_that_accounts_ticker(kitesim):
    acc = kitesim.account
    symbol, _ = _option(kitesim)
    async with aiohttp.ClientSession() as session:
        url = f"{kitesim.ws_url}?api_key={acc.api_key}&access_token={acc.access_token}"
        other = kitesim.accounts[1]
        async with session.ws_connect(url) as ws, session.ws_connect(
                f"{kitesim.ws_url}?api_key={other.api_key}&access_token={other.access_token}") as ws2:
            order_id = await _place(_kite(kitesim), symbol, _lot(kitesim, symbol), tag="pb1")
            statuses = []
            while len(statuses) < 2:
                msg = await asyncio.wait_for(ws.receive(), 30)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    body = orjson.loads(msg.data)
                    data = body["data"]
                    assert body["type"] == "order" and data["order_id"] == order_id
                    assert data["app_id"] == acc.app_id and data["checksum"] == postback_checksum(
                        order_id, data["order_timestamp"], acc.api_secret)
                    statuses.append(data["status"])
            assert statuses == ["OPEN", "COMPLETE"]
            assert not kitesim.state.hub.of_key(other.api_key)[0].texts  # nothing queued for others
            await ws2.close()


async def test_rate_limit_returns_kites_429(kitesim_factory):
    sim = await kitesim_factory(order_rate_limit=2)
    symbol, _ = _option(sim)
    lot = _lot(sim, symbol)
    rounds, refused = 0, []
    while not refused and rounds < 20:  # three at once cannot all fit in two per second
        rounds += 1
        results = await asyncio.gather(*(_place(_kite(sim), symbol, lot) for _ in range(3)), return_exceptions=True)
        refused = [r for r in results if isinstance(r, Exception)]
    assert refused and all(isinstance(e, kex.NetworkException) and e.code == 429
                           and "Too many requests" in str(e) for e in refused), refused
    key = sim.account.api_key
    assert sim.state.counters.rate_limited[key] == len(refused)
    assert sim.state.counters.order_attempts[key] == 3 * rounds
    sim.state.set_order_rate_limit(0)
    await asyncio.gather(*(_place(_kite(sim), symbol, lot) for _ in range(3)))  # no limit: all placed
    assert sim.state.counters.order_attempts[key] == 3 * rounds + 3


def test_rate_window_is_any_one_second():
    limit = SlidingLimit(10)
    assert all(limit.admit("k", now=100 + i * 0.01) for i in range(10))
    assert not limit.admit("k", now=100.5)
    assert limit.admit("k", now=101.0) and limit.admit("other", now=100.5)


async def test_max_orders_in_window_counter(kitesim):
    c = kitesim.state.counters
    for t in (0.0, 0.2, 0.9, 1.5, 1.6, 1.7, 1.8, 3.0):
        c.order_created("k", None, 1000 + t)
    assert c.max_orders_in_window("k") == 5  # 0.9, 1.5, 1.6, 1.7, 1.8
    assert c.snapshot()["max_orders_per_second"]["k"] == 5


def test_amo_waits_for_the_open_then_matches():
    from datetime import datetime

    from ticker.core.clock import IST
    from ticker.infra.kitesim.config import SimConfig
    from ticker.infra.kitesim.envelopes import KiteError
    from ticker.infra.kitesim.order_rules import parse_place
    from ticker.infra.kitesim.sim_state import SimState

    state = SimState(SimConfig(seed=7, market_hours="nse"))
    row = np.flatnonzero(state.universe.kind == KIND_CE)[0]
    sym, lot = str(state.universe.symbol[row]), int(state.universe.lot[row])
    form = {"exchange": "NFO", "tradingsymbol": sym, "transaction_type": "BUY", "quantity": str(lot),
            "product": "NRML", "order_type": "SL-M", "trigger_price": "100000", "market_protection": "-1"}
    saturday = datetime(2026, 11, 21, 11, 0, tzinfo=IST).timestamp()
    monday = datetime(2026, 11, 23, 10, 0, tzinfo=IST).timestamp()
    order = state.orders.place("sim_api_key", "SIM001", parse_place("amo", form), now=saturday)
    assert order.status == "AMO REQ RECEIVED"
    state.orders.match(saturday + 60)
    assert order.status == "AMO REQ RECEIVED"
    state.orders.match(monday)
    assert order.status == "TRIGGER PENDING"  # the trigger is far above the market
    with pytest.raises(KiteError, match="closed"):
        state.orders.place("sim_api_key", "SIM001", parse_place("regular", form), now=saturday)
