"""Margin calculation and charges through the real SDK: order_margins, basket_order_margins,
get_virtual_contract_note — Kite's shapes, the stand-in's margin model and Zerodha's 2026 rates."""

from __future__ import annotations

import asyncio

import pytest
import requests
from kiteconnect import exceptions as kex

from tests.kitesim.trading_helpers import call, future, http_headers, kite, option

MARGIN_KEYS = {"type", "tradingsymbol", "exchange", "span", "exposure", "option_premium", "additional", "bo",
               "cash", "var", "pnl", "leverage", "charges", "total"}
CHARGE_KEYS = {"transaction_tax", "transaction_tax_type", "exchange_turnover_charge", "sebi_turnover_charge",
               "brokerage", "stamp_duty", "gst", "total"}


def _order(inst, side: str, qty: int, order_type: str = "MARKET", price: float = 0.0, product: str = "NRML"):
    return {"exchange": "NFO", "tradingsymbol": inst.symbol, "transaction_type": side, "variety": "regular",
            "product": product, "order_type": order_type, "quantity": qty, "price": price, "trigger_price": 0}


def _check_charges(c: dict) -> None:
    assert set(c) == CHARGE_KEYS and c["transaction_tax_type"] == "stt"
    gst = 0.18 * (c["brokerage"] + c["exchange_turnover_charge"] + c["sebi_turnover_charge"])
    assert c["gst"] == {"igst": pytest.approx(gst), "cgst": 0, "sgst": 0, "total": pytest.approx(gst)}
    parts = ("transaction_tax", "exchange_turnover_charge", "sebi_turnover_charge", "brokerage", "stamp_duty")
    assert c["total"] == pytest.approx(sum(c[k] for k in parts) + gst)


async def test_order_margins_per_instrument_kind(kitesim):
    k, opt, fut = kite(kitesim), option(kitesim), future(kitesim)
    premium = opt.grid(opt.price)
    buy, sell, fut_buy = await call(k.order_margins, [
        _order(opt, "BUY", opt.lot, "LIMIT", premium), _order(opt, "SELL", opt.lot), _order(fut, "BUY", fut.lot)])
    for m in (buy, sell, fut_buy):
        assert set(m) == MARGIN_KEYS and m["type"] == "equity" and m["exchange"] == "NFO"
        assert m["pnl"] == {"realised": 0, "unrealised": 0} and m["leverage"] == 1
        assert m["total"] == pytest.approx(m["span"] + m["exposure"] + m["option_premium"] + m["var"])
        _check_charges(m["charges"])
    assert buy["tradingsymbol"] == opt.symbol
    assert buy["option_premium"] == pytest.approx(premium * opt.lot) and buy["span"] == buy["exposure"] == 0
    spot = float(kitesim.state.market.spots[0])
    assert sell["option_premium"] == 0 and sell["span"] > 0
    assert sell["exposure"] == pytest.approx(0.02 * spot * opt.lot, rel=0.01)
    notional = fut.price * fut.lot
    assert 0.08 * notional < fut_buy["span"] < 0.1 * notional
    assert fut_buy["exposure"] == pytest.approx(0.02 * notional, rel=0.01)
    assert sell["charges"]["transaction_tax"] > 0 and buy["charges"]["transaction_tax"] == 0
    assert buy["charges"]["stamp_duty"] > 0 and sell["charges"]["stamp_duty"] == 0


async def test_order_margins_consider_open_positions(kitesim):
    k, opt = kite(kitesim), option(kitesim)
    await call(k.place_order, variety="regular", exchange="NFO", tradingsymbol=opt.symbol, transaction_type="BUY",
               quantity=opt.lot, product="NRML", order_type="LIMIT", price=opt.grid(opt.price * 1.5))
    closing, beyond = await call(k.order_margins, [_order(opt, "SELL", opt.lot), _order(opt, "SELL", 2 * opt.lot)])
    assert closing["total"] == 0 and closing["charges"]["total"] > 0
    alone = (await call(kite(kitesim, 1).order_margins, [_order(opt, "SELL", opt.lot)]))[0]
    assert beyond["total"] == pytest.approx(alone["total"], rel=0.01)


async def test_compact_mode_gives_only_totals(kitesim):
    k, fut = kite(kitesim), future(kitesim)
    r = await asyncio.to_thread(requests.post, f"{kitesim.url}/margins/orders", params={"mode": "compact"},
                                json=[_order(fut, "SELL", fut.lot)], headers=http_headers(kitesim), timeout=10)
    [m] = r.json()["data"]
    assert set(m) == MARGIN_KEYS and m["tradingsymbol"] == fut.symbol and m["total"] > 0
    assert m["span"] == m["exposure"] == m["charges"]["total"] == 0
    basket = await call(k.basket_order_margins, [_order(fut, "SELL", fut.lot)], False, "compact")
    assert basket["initial"]["total"] == pytest.approx(m["total"], rel=0.01)
    assert basket["orders"][0]["span"] == 0 and basket["final"]["total"] > 0


async def test_basket_spread_gets_a_hedge_benefit(kitesim):
    k = kite(kitesim)
    long_call, short_call = option(kitesim), option(kitesim, offset=4)
    orders = [_order(long_call, "BUY", long_call.lot), _order(short_call, "SELL", short_call.lot)]
    b = await call(k.basket_order_margins, orders)
    assert set(b) == {"initial", "final", "orders", "charges"}
    assert set(b["initial"]) == set(b["final"]) == MARGIN_KEYS and len(b["orders"]) == 2
    each = b["orders"]
    assert b["initial"]["total"] == pytest.approx(sum(o["total"] for o in each))
    assert b["initial"]["span"] == pytest.approx(each[1]["span"])
    assert b["initial"]["option_premium"] == pytest.approx(each[0]["option_premium"])
    # a debit spread risks only what it pays: far less than the naked short leg
    assert b["final"]["total"] < 0.5 * b["initial"]["total"]
    net = long_call.price * long_call.lot - short_call.price * short_call.lot
    assert b["final"]["option_premium"] == pytest.approx(net, rel=0.02)
    assert b["charges"]["brokerage"] == pytest.approx(40)
    assert b["charges"]["total"] == pytest.approx(sum(o["charges"]["total"] for o in each))


async def test_basket_consider_positions_nets_against_what_is_held(kitesim):
    k, fut = kite(kitesim), future(kitesim)
    await call(k.place_order, variety="regular", exchange="NFO", tradingsymbol=fut.symbol, transaction_type="BUY",
               quantity=fut.lot, product="NRML", order_type="LIMIT", price=fut.grid(fut.price * 1.01))
    closing = [_order(fut, "SELL", fut.lot)]
    with_positions = await call(k.basket_order_margins, closing, True)
    without = await call(k.basket_order_margins, closing, False)
    assert without["final"]["total"] > 0
    # closing the held future releases all of its margin
    assert with_positions["final"]["total"] == pytest.approx(-without["final"]["total"], rel=0.01)
    assert with_positions["initial"]["total"] == pytest.approx(without["initial"]["total"], rel=0.01)


@pytest.mark.parametrize("change, match", [
    ({"tradingsymbol": "NOSUCH26DECFUT"}, "does not exist"),
    ({"quantity": 0}, "quantity"),
    ({"transaction_type": "HOLD"}, "transaction_type"),
    ({"product": "XYZ"}, "product"),
    ({"exchange": "NSE", "tradingsymbol": "NIFTY 50"}, "Indices"),
])
async def test_invalid_margin_requests(kitesim, change, match):
    k, fut = kite(kitesim), future(kitesim)
    with pytest.raises(kex.InputException, match=match):
        await call(k.order_margins, [_order(fut, "BUY", fut.lot) | change])
    with pytest.raises(kex.InputException, match=match):
        await call(k.basket_order_margins, [_order(fut, "BUY", fut.lot) | change])


async def test_margin_bodies_must_be_json_arrays(kitesim):
    for path, body in (("/margins/orders", "not json"), ("/margins/basket", "{}"), ("/charges/orders", "[]")):
        r = await asyncio.to_thread(requests.post, f"{kitesim.url}{path}", data=body, timeout=10,
                                    headers=http_headers(kitesim) | {"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error_type"] == "InputException", (path, r.text)
    r = await asyncio.to_thread(requests.post, f"{kitesim.url}/margins/basket", params={"mode": "full"},
                                json=[], headers=http_headers(kitesim), timeout=10)
    assert r.status_code == 400 and "mode" in r.json()["message"]


def _note(inst, side: str, qty: int, price: float, product: str = "NRML") -> dict:
    return {"order_id": "1", "exchange": "NFO", "tradingsymbol": inst.symbol, "transaction_type": side,
            "variety": "regular", "product": product, "order_type": "LIMIT", "quantity": qty, "average_price": price}


async def test_virtual_contract_note_uses_2026_fo_rates(kitesim):
    k, opt, fut = kite(kitesim), option(kitesim), future(kitesim)
    rows = await call(k.get_virtual_contract_note, [
        _note(opt, "SELL", opt.lot, 100.0), _note(opt, "BUY", opt.lot, 100.0),
        _note(fut, "SELL", fut.lot, 26_000.0), _note(fut, "BUY", 1 * fut.lot, 100.0)])
    assert len(rows) == 4
    for row in rows:
        assert set(row) == {"transaction_type", "tradingsymbol", "exchange", "variety", "product", "order_type",
                            "quantity", "price", "charges"}
        _check_charges(row["charges"])
    opt_sell, opt_buy, fut_sell, small_fut_buy = (r["charges"] for r in rows)
    premium = 100.0 * opt.lot
    assert rows[0]["price"] == 100.0 and rows[0]["quantity"] == opt.lot
    assert opt_sell["transaction_tax"] == pytest.approx(0.0015 * premium)        # STT 0.15% of premium
    assert opt_sell["exchange_turnover_charge"] == pytest.approx(0.0003553 * premium)
    assert opt_sell["sebi_turnover_charge"] == pytest.approx(premium * 10 / 1e7)
    assert opt_sell["brokerage"] == opt_buy["brokerage"] == 20
    assert opt_buy["transaction_tax"] == 0 and opt_buy["stamp_duty"] == pytest.approx(0.00003 * premium)
    turnover = 26_000.0 * fut.lot
    assert fut_sell["transaction_tax"] == pytest.approx(0.0005 * turnover)      # STT 0.05% on futures
    assert fut_sell["exchange_turnover_charge"] == pytest.approx(0.0000183 * turnover)
    assert fut_sell["brokerage"] == 20 and fut_sell["stamp_duty"] == 0
    small = 100.0 * fut.lot
    assert small_fut_buy["brokerage"] == pytest.approx(0.0003 * small)         # 0.03% when under ₹20
    assert small_fut_buy["stamp_duty"] == pytest.approx(0.00002 * small)
    with pytest.raises(kex.InputException, match="average_price"):
        await call(k.get_virtual_contract_note, [_note(opt, "SELL", opt.lot, 100.0) | {"average_price": None}])
