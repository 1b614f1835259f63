"""Kite's 2026 order and request rules, each driven through the real kiteconnect SDK into the
stand-in, with Kite's error envelope, HTTP status and error_type."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from ticker.core.contract_specs import max_order_quantity
from ticker.infra.kite.rest import KiteApi, KiteHttp
from ticker.infra.kitesim.order_rules import MAX_SLICES
from ticker.infra.kitesim.universe import KIND_CE, KIND_FUT


def _kite(sim) -> KiteConnect:
    acc = sim.account
    return KiteConnect(acc.api_key, acc.access_token, root=sim.url)


def _contract(sim, name: str, kind: int = KIND_CE) -> tuple[str, int, int]:
    """A contract of `name` near the money: (tradingsymbol, lot size, freeze quantity), both from the
    stand-in's instrument master."""
    uni, m = sim.state.universe, sim.state.market
    und = uni.by_name[name]
    rows = np.flatnonzero((uni.kind == kind) & (uni.und == und))
    row = rows[np.argmin(np.abs(uni.strike[rows] - m.spots[und]))] if kind == KIND_CE else rows[0]
    return str(uni.symbol[row]), int(uni.lot[row]), int(uni.freeze[row])


def _place(kite: KiteConnect, symbol: str, quantity: int, **kw):
    args = {"variety": "regular", "exchange": "NFO", "tradingsymbol": symbol, "transaction_type": "BUY",
            "quantity": quantity, "product": "NRML", "order_type": "MARKET", **kw}
    return asyncio.to_thread(kite.place_order, **args)


async def _refused(call, match: str) -> None:
    """The call fails as Kite refuses input: InputException, HTTP 400."""
    with pytest.raises(kex.InputException, match=match) as err:
        await call
    assert err.value.code == 400


# --- market protection --------------------------------------------------------------------------
@pytest.mark.parametrize("order_type, extra", [("MARKET", {}), ("SL-M", {"trigger_price": 100_000.0})])
@pytest.mark.parametrize("protection", [None, 0])
async def test_market_and_slm_orders_need_market_protection(kitesim, order_type, extra, protection):
    symbol, lot, _ = _contract(kitesim, "NIFTY")
    kwargs = {} if protection is None else {"market_protection": protection}
    await _refused(_place(_kite(kitesim), symbol, lot, order_type=order_type, **extra, **kwargs),
                   "without market protection")
    assert kitesim.state.orders.orders == {}


async def test_market_protection_values_and_the_envelope(kitesim):
    kite = _kite(kitesim)
    symbol, lot, _ = _contract(kitesim, "NIFTY")
    auto = await _place(kite, symbol, lot, market_protection=-1)
    pct = await _place(kite, symbol, lot, market_protection=5)
    book = {o["order_id"]: o for o in await asyncio.to_thread(kite.orders)}
    assert book[auto]["market_protection"] == -1 and book[pct]["market_protection"] == 5
    assert {book[auto]["status"], book[pct]["status"]} == {"COMPLETE"}
    for bad in (101, 0.5, -2):
        await _refused(_place(kite, symbol, lot, market_protection=bad), "market_protection")
    acc = kitesim.account
    r = await asyncio.to_thread(requests.post, f"{kitesim.url}/orders/regular", data={
        "exchange": "NFO", "tradingsymbol": symbol, "transaction_type": "BUY", "quantity": lot,
        "product": "NRML", "order_type": "MARKET"},
        headers={"X-Kite-Version": "3", "Authorization": f"token {acc.api_key}:{acc.access_token}"})
    assert r.status_code == 400
    assert r.json() == {"status": "error", "data": None, "error_type": "InputException",
                        "message": "Market orders without market protection are not allowed via API. "
                                   "Please set market protection or use a Limit order."}


async def test_modifying_into_a_market_order_needs_protection(kitesim):
    kite = _kite(kitesim)
    symbol, lot, _ = _contract(kitesim, "NIFTY")
    resting = await _place(kite, symbol, lot, order_type="LIMIT", price=0.05)
    await _refused(asyncio.to_thread(kite.modify_order, "regular", resting, order_type="MARKET"),
                   "without market protection")
    await asyncio.to_thread(kite.modify_order, "regular", resting, order_type="MARKET", market_protection=-1)
    last = (await asyncio.to_thread(kite.order_history, resting))[-1]
    assert last["status"] == "COMPLETE" and last["market_protection"] == -1


# --- lots, freeze quantity, autoslice ------------------------------------------------------------
async def test_quantity_must_be_a_lot_multiple(kitesim):
    symbol, lot, _ = _contract(kitesim, "BANKNIFTY")
    await _refused(_place(_kite(kitesim), symbol, lot + 1, market_protection=-1), f"lot size \\({lot}\\)")


async def test_quantity_above_the_freeze_limit_needs_autoslice(kitesim):
    kite = _kite(kitesim)
    symbol, lot, freeze = _contract(kitesim, "BANKNIFTY")
    over = (freeze // lot + 1) * lot
    await _refused(_place(kite, symbol, over, market_protection=-1), f"freeze limit of {freeze}")
    largest = max_order_quantity(freeze, lot)
    assert await _place(kite, symbol, largest, market_protection=-1)  # up to the limit is one order
    resting = await _place(kite, symbol, lot, order_type="LIMIT", price=0.05)
    await _refused(asyncio.to_thread(kite.modify_order, "regular", resting, quantity=over), "freeze limit")


async def test_autoslice_splits_into_freeze_sized_slices(kitesim):
    kite = _kite(kitesim)
    symbol, lot, freeze = _contract(kitesim, "NIFTY")
    size = max_order_quantity(freeze, lot)
    quantity = 2 * size + lot
    resp = await asyncio.to_thread(kite.place_autoslice_order, variety="regular", exchange="NFO",
                                   tradingsymbol=symbol, transaction_type="BUY", quantity=quantity,
                                   product="NRML", order_type="MARKET", market_protection=-1, tag="big1")
    assert set(resp) == {"order_id", "children"} and len(resp["children"]) == 3
    children = [c["order_id"] for c in resp["children"]]
    book = {o["order_id"]: o for o in await asyncio.to_thread(kite.orders)}
    assert resp["order_id"] not in book  # the parent is a reference, the slices are the orders
    assert [book[c]["quantity"] for c in children] == [size, size, lot]
    for c in children:
        assert book[c]["tags"] == ["big1", "autoslice", f"autoslice:{resp['order_id']}"]
        assert book[c]["quantity"] <= freeze and book[c]["status"] == "COMPLETE"
    assert kitesim.state.counters.orders_by_tag["big1"] == 3


async def test_autoslice_is_refused_beyond_ten_slices_or_without_need(kitesim):
    kite = _kite(kitesim)
    symbol, lot, freeze = _contract(kitesim, "NIFTY")
    size = max_order_quantity(freeze, lot)

    def autoslice(quantity: int):
        return asyncio.to_thread(kite.place_autoslice_order, variety="regular", exchange="NFO",
                                 tradingsymbol=symbol, transaction_type="BUY", quantity=quantity,
                                 product="NRML", order_type="LIMIT", price=0.05)

    await _refused(autoslice(MAX_SLICES * size + lot), f"at most {MAX_SLICES} slices")
    await _refused(autoslice(size), "for order slicing")  # fits one order: nothing to slice
    assert kitesim.state.orders.orders == {}
    resp = await autoslice(MAX_SLICES * size)
    assert len(resp["children"]) == MAX_SLICES and all("order_id" in c for c in resp["children"])


# --- variety fields ------------------------------------------------------------------------------
async def test_cover_orders_need_a_trigger_price(kitesim):
    kite = _kite(kitesim)
    symbol, lot, _ = _contract(kitesim, "NIFTY", KIND_FUT)
    await _refused(_place(kite, symbol, lot, variety="co", product="MIS", order_type="LIMIT", price=1.0),
                   "trigger")
    assert await _place(kite, symbol, lot, variety="co", product="MIS", order_type="LIMIT", price=1.0,
                        trigger_price=0.5)


@pytest.mark.parametrize("fields, match", [
    ({"iceberg_quantity": 1}, "iceberg_legs"),
    ({"iceberg_legs": 1, "iceberg_quantity": 1}, "iceberg_legs"),
    ({"iceberg_legs": 11, "iceberg_quantity": 1}, "iceberg_legs"),
    ({"iceberg_legs": 2}, "iceberg_quantity"),
])
async def test_iceberg_orders_need_legs_and_a_leg_quantity(kitesim, fields, match):
    symbol, lot, _ = _contract(kitesim, "NIFTY")
    fields = {k: v * lot if k == "iceberg_quantity" else v for k, v in fields.items()}
    await _refused(_place(_kite(kitesim), symbol, 4 * lot, variety="iceberg", order_type="LIMIT", price=0.05,
                          **fields), match)


async def test_a_valid_iceberg_order_is_placed(kitesim):
    kite = _kite(kitesim)
    symbol, lot, _ = _contract(kitesim, "NIFTY")
    order_id = await _place(kite, symbol, 4 * lot, variety="iceberg", order_type="LIMIT", price=0.05,
                            iceberg_legs=2, iceberg_quantity=2 * lot)
    [order] = await asyncio.to_thread(kite.orders)
    assert order["order_id"] == order_id and order["variety"] == "iceberg" and order["status"] == "OPEN"


async def test_ttl_orders_need_their_minutes(kitesim):
    kite = _kite(kitesim)
    symbol, lot, _ = _contract(kitesim, "NIFTY")
    await _refused(_place(kite, symbol, lot, order_type="LIMIT", price=0.05, validity="TTL"), "validity_ttl")
    order_id = await _place(kite, symbol, lot, order_type="LIMIT", price=0.05, validity="TTL", validity_ttl=5)
    [order] = await asyncio.to_thread(kite.orders)
    assert order["order_id"] == order_id and order["validity"] == "TTL" and order["validity_ttl"] == 5


async def test_modify_and_cancel_must_name_the_orders_variety(kitesim):
    kite = _kite(kitesim)
    symbol, lot, _ = _contract(kitesim, "NIFTY")
    order_id = await _place(kite, symbol, lot, order_type="LIMIT", price=0.05)
    await _refused(asyncio.to_thread(kite.modify_order, "amo", order_id, price=0.1), "variety")
    await _refused(asyncio.to_thread(kite.cancel_order, "co", order_id), "variety")
    await _refused(asyncio.to_thread(kite.cancel_order, "nosuch", order_id), "variety")
    assert (await asyncio.to_thread(kite.order_history, order_id))[-1]["status"] == "OPEN"
    assert await asyncio.to_thread(kite.cancel_order, "regular", order_id) == order_id


# --- the version header and request sizes --------------------------------------------------------
async def test_the_kite_version_header_is_required(kitesim):
    kite = _kite(kitesim)
    kite.kite_header_version = ""  # an SDK that does not say which API version it speaks
    await _refused(asyncio.to_thread(kite.orders), "X-Kite-Version")
    acc = kitesim.account
    auth = {"Authorization": f"token {acc.api_key}:{acc.access_token}"}
    for headers in (auth, {**auth, "X-Kite-Version": "2"}):
        r = await asyncio.to_thread(requests.get, f"{kitesim.url}/orders", headers=headers)
        assert r.status_code == 400 and r.json()["error_type"] == "InputException"
        assert r.json()["status"] == "error" and r.json()["data"] is None
    kite.kite_header_version = "3"
    assert await asyncio.to_thread(kite.orders) == []


async def test_quote_takes_500_and_ltp_ohlc_1000_instruments(kitesim_factory):
    sim = await kitesim_factory(quote_rate_limit=0)  # several quote calls at once: sizes, not rates
    kite = _kite(sim)
    uni = sim.state.universe
    keys = [f"{uni.exchange_of(r)}:{uni.symbol[r]}" for r in range(len(uni))]
    assert len(keys) > 1001 and sum(map(len, keys[:1000])) > 16_000  # longer than aiohttp's default line
    assert len(await asyncio.to_thread(kite.quote, keys[:500])) == 500
    await _refused(asyncio.to_thread(kite.quote, keys[:501]), "at most 500")
    assert len(await asyncio.to_thread(kite.ltp, keys[:1000])) == 1000
    assert len(await asyncio.to_thread(kite.ohlc, keys[:1000])) == 1000
    await _refused(asyncio.to_thread(kite.ltp, keys[:1001]), "at most 1000")
    await _refused(asyncio.to_thread(kite.ohlc, keys[:1001]), "at most 1000")


# --- our own client ------------------------------------------------------------------------------
async def test_our_client_speaks_v3_and_sends_orders_as_given(kitesim):
    """infra/kite/rest.py sends X-Kite-Version: 3 and an order's fields as given: market protection is
    filled in by order intake (core/order_intake.py), not by the client, so a MARKET order without
    one is Kite's refusal."""
    acc = kitesim.account
    symbol, lot, _ = _contract(kitesim, "NIFTY")
    http = KiteHttp(kitesim.url, timeout=10)
    try:
        api = KiteApi(http, acc.api_key, acc.access_token)
        base = {"exchange": "NFO", "tradingsymbol": symbol, "transaction_type": "BUY", "quantity": lot,
                "product": "NRML"}
        with pytest.raises(kex.InputException, match="market protection"):
            await api.place_order("regular", {**base, "order_type": "MARKET"})
        auto = (await api.place_order("regular", {**base, "order_type": "MARKET", "market_protection": -1})).order_id
        chosen = (await api.place_order("regular", {**base, "order_type": "MARKET", "market_protection": 3})).order_id
        limit = (await api.place_order("regular", {**base, "order_type": "LIMIT", "price": 0.05})).order_id
        await api.modify_order("regular", limit, {"order_type": "MARKET", "market_protection": -1})
        book = {o.order_id: o for o in await api.orders()}
    finally:
        await http.close()
    assert [book[o].market_protection for o in (auto, chosen, limit)] == [-1, 3, -1]
    assert book[limit].status == "COMPLETE"


async def test_our_client_splits_long_instrument_lists_into_calls_kite_takes(kitesim_factory):
    sim = await kitesim_factory(quote_rate_limit=0)  # several quote calls in a row: sizes, not rates
    uni = sim.state.universe
    keys = [f"{uni.exchange_of(r)}:{uni.symbol[r]}" for r in range(1201)]
    http = KiteHttp(sim.url, timeout=10)
    paced: list[int] = []

    async def pace() -> None:
        paced.append(1)

    try:
        api = KiteApi(http, sim.account.api_key, sim.account.access_token)
        quotes = await api.quote(keys, pace=pace)
        ltps, ohlcs = await api.ltp(keys), await api.ohlc(keys[:1000])
        assert await api.ltp([]) == {}
    finally:
        await http.close()
    assert set(quotes) == set(ltps) == set(keys) and len(ohlcs) == 1000
    requests = sim.state.counters.snapshot()["requests"]
    assert requests["GET /quote"] == 3 and len(paced) == 3  # 500 + 500 + 201, each paced
    assert requests["GET /quote/ltp"] == 2 and requests["GET /quote/ohlc"] == 1
    assert sim.state.counters.snapshot()["rate_limited_by_route"] == {}
