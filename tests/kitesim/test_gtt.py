"""GTT triggers through the real SDK: placing, firing on the stand-in's own prices, OCO, modify,
delete, list, Kite's validation; and the admin API that moves a price."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
import requests
from kiteconnect import exceptions as kex

from tests.kitesim.trading_helpers import (
    call,
    future,
    http_headers,
    kite,
    move_price,
    option,
    wait_for,
)

GTT_KEYS = {"id", "user_id", "parent_trigger", "type", "created_at", "updated_at", "expires_at", "status",
            "condition", "orders", "meta"}
RESULT_KEYS = {"account_id", "exchange", "tradingsymbol", "validity", "product", "order_type",
               "transaction_type", "quantity", "price", "meta", "timestamp", "triggered_at", "order_result"}


def _leg(side: str, qty: int, price: float, order_type: str = "LIMIT", product: str = "NRML") -> dict:
    return {"transaction_type": side, "quantity": qty, "order_type": order_type, "product": product,
            "price": price}


async def _place(k, kind: str, inst, triggers: list[float], last: float, legs: list[dict]) -> int:
    placed = await call(k.place_gtt, kind, inst.symbol, "NFO", triggers, last, legs)
    return placed["trigger_id"]


async def _triggered(k, gtt_id: int) -> dict:
    async def probe():
        g = await call(k.get_gtt, gtt_id)
        return g if g["status"] == "triggered" else None
    return await wait_for(probe, f"GTT {gtt_id} to trigger")


async def _order(k, order_id: str) -> dict:
    async def probe():
        return next((o for o in await call(k.orders) if o["order_id"] == order_id and o["status"] == "COMPLETE"),
                    None)
    return await wait_for(probe, f"order {order_id} to complete")


async def test_single_gtt_fires_on_the_price_and_its_order_fills_with_postbacks(kitesim):
    k, inst = kite(kitesim), option(kitesim)
    p = inst.price
    trigger, limit = inst.grid(p * 1.2), inst.grid(p * 1.6)
    gtt_id = await _place(k, "single", inst, [trigger], p, [_leg("BUY", inst.lot, limit)])
    g = await call(k.get_gtt, gtt_id)
    assert set(g) == GTT_KEYS and g["status"] == "active" and g["type"] == "single"
    assert g["condition"] == {"exchange": "NFO", "tradingsymbol": inst.symbol, "trigger_values": [trigger],
                              "last_price": p, "instrument_token": inst.token}
    assert g["orders"][0]["result"] is None and g["user_id"] == kitesim.account.user_id
    acc = kitesim.account
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"{kitesim.ws_url}?api_key={acc.api_key}&access_token={acc.access_token}") as ws:
        moved = await move_price(kitesim, inst, inst.grid(p * 1.35))
        assert moved["last_price"] == pytest.approx(p * 1.35, abs=inst.tick)
        g = await _triggered(k, gtt_id)
        result = g["orders"][0]["result"]
        assert set(result) == RESULT_KEYS and result["order_result"]["status"] == "success"
        assert result["triggered_at"] >= trigger and result["price"] == limit
        assert orjson.loads(result["meta"])["gtt"] == gtt_id and g["meta"] is None
        order_id = result["order_result"]["order_id"]
        order = await _order(k, order_id)
        assert order["transaction_type"] == "BUY" and order["order_type"] == "LIMIT"
        assert order["filled_quantity"] == inst.lot and order["price"] == limit
        statuses = []
        while "COMPLETE" not in statuses:
            msg = await asyncio.wait_for(ws.receive(), 30)
            if msg.type == aiohttp.WSMsgType.TEXT:
                body = orjson.loads(msg.data)
                if body["type"] == "order" and body["data"]["order_id"] == order_id:
                    statuses.append(body["data"]["status"])
    assert statuses[-1] == "COMPLETE"
    positions = await call(k.positions)
    assert [(p["tradingsymbol"], p["quantity"]) for p in positions["net"]] == [(inst.symbol, inst.lot)]


async def test_oco_fires_only_the_leg_whose_trigger_is_hit(kitesim):
    k, inst = kite(kitesim), option(kitesim)
    p = inst.price
    await call(k.place_order, variety="regular", exchange="NFO", tradingsymbol=inst.symbol,
               transaction_type="BUY", quantity=inst.lot, product="NRML", order_type="LIMIT", price=inst.grid(p * 1.5))
    low, high = inst.grid(p * 0.8), inst.grid(p * 1.25)
    gtt_id = await _place(k, "two-leg", inst, [low, high], p,
                          [_leg("SELL", inst.lot, inst.grid(p * 0.6)), _leg("SELL", inst.lot, inst.grid(p * 1.2))])
    g = await call(k.get_gtt, gtt_id)
    assert g["type"] == "two-leg" and g["condition"]["trigger_values"] == [low, high]
    await move_price(kitesim, inst, inst.grid(p * 0.7))
    g = await _triggered(k, gtt_id)
    stop, target = g["orders"]
    assert target["result"] is None
    assert stop["result"]["triggered_at"] <= low and stop["result"]["order_result"]["status"] == "success"
    order = await _order(k, stop["result"]["order_result"]["order_id"])
    assert order["transaction_type"] == "SELL" and order["quantity"] == inst.lot
    [pos] = (await call(k.positions))["net"]
    assert pos["quantity"] == 0 and pos["sell_quantity"] == inst.lot


async def test_market_leg_is_placed_with_market_protection_and_fills(kitesim):
    k, inst = kite(kitesim), future(kitesim)
    p = inst.price
    gtt_id = await _place(k, "single", inst, [inst.grid(p * 0.97)], p, [_leg("SELL", inst.lot, 0, "MARKET")])
    await move_price(kitesim, inst, inst.grid(p * 0.95))
    g = await _triggered(k, gtt_id)
    order = await _order(k, g["orders"][0]["result"]["order_result"]["order_id"])
    assert order["order_type"] == "MARKET" and order["transaction_type"] == "SELL"
    assert order["average_price"] == pytest.approx(p * 0.95, rel=0.01)


async def test_modify_and_delete(kitesim):
    k, inst = kite(kitesim), option(kitesim)
    p = inst.price
    gtt_id = await _place(k, "single", inst, [inst.grid(p * 1.3)], p, [_leg("BUY", inst.lot, inst.grid(p * 1.4))])
    assert await call(k.modify_gtt, gtt_id, "two-leg", inst.symbol, "NFO", [inst.grid(p * 0.7), inst.grid(p * 1.5)],
                      p, [_leg("SELL", inst.lot, inst.grid(p * 0.6)), _leg("SELL", 2 * inst.lot, inst.grid(p * 1.45))]) \
        == {"trigger_id": gtt_id}
    g = await call(k.get_gtt, gtt_id)
    assert g["type"] == "two-leg" and g["status"] == "active"
    assert g["condition"]["trigger_values"] == [inst.grid(p * 0.7), inst.grid(p * 1.5)]
    assert [o["quantity"] for o in g["orders"]] == [inst.lot, 2 * inst.lot]
    other = option(kitesim, offset=2)
    with pytest.raises(kex.InputException, match="instrument"):
        await call(k.modify_gtt, gtt_id, "single", other.symbol, "NFO", [other.grid(other.price * 1.3)],
                   other.price, [_leg("BUY", other.lot, other.grid(other.price * 1.4))])
    assert await call(k.delete_gtt, gtt_id) == {"trigger_id": gtt_id}
    assert (await call(k.get_gtt, gtt_id))["status"] == "deleted"
    with pytest.raises(kex.InputException, match="deleted"):
        await call(k.delete_gtt, gtt_id)
    with pytest.raises(kex.InputException, match="deleted"):
        await call(k.modify_gtt, gtt_id, "single", inst.symbol, "NFO", [inst.grid(p * 1.3)], p,
                   [_leg("BUY", inst.lot, inst.grid(p * 1.4))])


async def test_list_is_newest_first_and_per_account(kitesim):
    k, inst = kite(kitesim), option(kitesim)
    p = inst.price
    first = await _place(k, "single", inst, [inst.grid(p * 1.3)], p, [_leg("BUY", inst.lot, inst.grid(p * 1.4))])
    second = await _place(k, "single", inst, [inst.grid(p * 0.7)], p, [_leg("SELL", inst.lot, inst.grid(p * 0.6))])
    listed = await call(k.get_gtts)
    assert [g["id"] for g in listed] == [second, first] and all(set(g) == GTT_KEYS for g in listed)
    other = kite(kitesim, 1)
    assert await call(other.get_gtts) == []
    with pytest.raises(kex.InputException) as err:
        await call(other.get_gtt, first)
    assert err.value.code == 404
    with pytest.raises(kex.InputException):
        await call(other.delete_gtt, first)
    assert (await call(k.get_gtt, first))["status"] == "active"


@pytest.mark.parametrize("change, match", [
    ({"triggers": [1.001]}, "too close"),
    ({"kind": "two-leg", "triggers": [1.2, 0.8], "legs": 2}, "below the last price"),
    ({"product": "MIS"}, "product"),
    ({"order_type": "SL"}, "order_type"),
    ({"qty": 1}, "lot size"),
    ({"price_offset": 0.03}, "Tick size"),
    ({"symbol": "NOSUCH26DEC1CE"}, "does not exist"),
])
async def test_invalid_gtts_raise_input_exception(kitesim, change, match):
    k, inst = kite(kitesim), option(kitesim)
    p = inst.price
    kind = change.get("kind", "single")
    triggers = [inst.grid(p * f) for f in change.get("triggers", [1.3])]
    leg = {"transaction_type": "BUY", "quantity": inst.lot + change.get("qty", 0),
           "order_type": change.get("order_type", "LIMIT"), "product": change.get("product", "NRML"),
           "price": inst.grid(p * 1.4) + change.get("price_offset", 0)}
    with pytest.raises(kex.InputException, match=match) as err:
        await call(k.place_gtt, kind, change.get("symbol", inst.symbol), "NFO", triggers, p,
                   [leg] * change.get("legs", 1))
    assert err.value.code == 400
    assert await call(k.get_gtts) == []


@pytest.mark.parametrize("form, match", [
    ({"type": "three-leg"}, "type"),
    ({"triggers": [1.3, 1.5]}, "exactly 1"),
    ({"type": "two-leg", "triggers": [0.7, 1.3]}, "2 order"),
    ({"condition": "{not json"}, "JSON"),
    ({"orders": ""}, "orders"),
])
async def test_raw_requests_the_sdk_would_refuse_get_kites_errors(kitesim, form, match):
    """Checks the SDK makes client-side are made by the stand-in too, for other clients."""
    inst = option(kitesim)
    p = inst.price
    condition = {"exchange": "NFO", "tradingsymbol": inst.symbol, "last_price": p,
                 "trigger_values": [inst.grid(p * f) for f in form.get("triggers", [1.3])]}
    orders = [_leg("BUY", inst.lot, inst.grid(p * 1.4)) | {"exchange": "NFO", "tradingsymbol": inst.symbol}]
    data = {"type": form.get("type", "single"), "condition": form.get("condition", orjson.dumps(condition)),
            "orders": form.get("orders", orjson.dumps(orders))}
    r = await asyncio.to_thread(requests.post, f"{kitesim.url}/gtt/triggers", data=data,
                                headers=http_headers(kitesim), timeout=10)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == "error" and body["error_type"] == "InputException" and match in body["message"]
    assert kitesim.state.gtts.gtts == {}


async def test_gtts_expire_after_a_year(kitesim):
    k, inst = kite(kitesim), option(kitesim)
    p = inst.price
    gtt_id = await _place(k, "single", inst, [inst.grid(p * 1.3)], p, [_leg("BUY", inst.lot, inst.grid(p * 1.4))])
    g = await call(k.get_gtt, gtt_id)
    assert g["expires_at"][:4] == str(int(g["created_at"][:4]) + 1)
    kitesim.state.gtts.check(time.time() + 366 * 86_400)
    assert (await call(k.get_gtt, gtt_id))["status"] == "expired"


async def test_gtts_do_not_fire_while_the_market_is_closed(kitesim_factory):
    sim = await kitesim_factory(market_hours="nse")
    if sim.state.market.is_open(time.time()):
        pytest.skip("NSE is open right now; a closed market cannot be shown")
    k, inst = kite(sim), option(sim)
    p = inst.price
    gtt_id = await _place(k, "single", inst, [inst.grid(p * 1.2)], p, [_leg("BUY", inst.lot, inst.grid(p * 1.6))])
    await move_price(sim, inst, inst.grid(p * 1.35))
    assert sim.state.gtts.check(time.time()) == 0
    assert (await call(k.get_gtt, gtt_id))["status"] == "active"


async def test_admin_price_moves_an_instrument_and_its_chain(kitesim):
    k, fut, call_opt = kite(kitesim), future(kitesim), option(kitesim)
    before = call_opt.price
    target = fut.grid(fut.price * 1.02)
    moved = await move_price(kitesim, fut, target)
    assert moved["instrument_token"] == fut.token and moved["underlying"] == "NIFTY"
    assert moved["last_price"] == pytest.approx(target, abs=fut.tick)
    ltp = (await call(k.ltp, f"NFO:{fut.symbol}"))[f"NFO:{fut.symbol}"]["last_price"]
    assert ltp == pytest.approx(target, rel=0.002)
    assert call_opt.price > before  # the call rose with its underlying
    url = f"{kitesim.url}/_sim/price"
    bad = [({"instrument_token": 1, "last_price": 10}, 404), ({"tradingsymbol": fut.symbol, "last_price": -1}, 400),
           ({"exchange": "NFO", "tradingsymbol": call_opt.symbol, "last_price": 1e9}, 400)]
    for body, status in bad:
        r = await asyncio.to_thread(requests.post, url, json=body, timeout=10)
        assert r.status_code == status, (body, r.text)
