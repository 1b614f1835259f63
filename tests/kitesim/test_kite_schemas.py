"""Our Kite client's typed answers, read from the stand-in: every call yields its model, timestamps
read as the SDK reads them, and `to_json()` gives back exactly the document Kite sent."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter

from tests.kitesim.trading_helpers import call, future, kite, option
from ticker.infra.kite.rest import DataException, KiteApi, KiteHttp, _typed
from ticker.infra.kite.schemas import (
    BasketMargins,
    Candle,
    Gtt,
    Holding,
    LtpQuote,
    Margins,
    OhlcQuote,
    Order,
    OrderMargins,
    OrderResult,
    Positions,
    Profile,
    Quote,
    SegmentMargins,
    Trade,
    as_json,
)


def _leg(inst, side: str = "BUY", order_type: str = "MARKET", price: float = 0.0) -> dict[str, Any]:
    return {"exchange": "NFO", "tradingsymbol": inst.symbol, "transaction_type": side, "variety": "regular",
            "product": "NRML", "order_type": order_type, "quantity": inst.lot, "price": price}


async def _raw(http: KiteHttp, api: KiteApi, method: str, path: str, **kw: Any) -> Any:
    """The `data` of Kite's envelope as it came, untyped."""
    return await http.request(method, path, auth=(api.api_key, api.access_token or ""), **kw)


async def test_every_answer_is_typed_and_gives_back_what_kite_sent(kitesim_factory):
    kitesim = await kitesim_factory(rate_limits=False)  # many calls in a row: shapes, not rates
    fut, opt = future(kitesim), option(kitesim)
    http = KiteHttp(kitesim.url, timeout=10)
    try:
        api = KiteApi(http, kitesim.account.api_key, kitesim.account.access_token)
        placed = await api.place_order("regular", {**_leg(fut), "market_protection": -1})
        resting = await api.place_order("regular", _leg(opt, order_type="LIMIT", price=opt.grid(opt.price / 2)))
        assert isinstance(placed, OrderResult) and placed.order_id in kitesim.state.orders.orders
        assert (await api.modify_order("regular", resting.order_id, {"quantity": 2 * opt.lot})).order_id == \
            resting.order_id
        trigger = await call(kite(kitesim).place_gtt, "single", opt.symbol, "NFO", [opt.grid(opt.price * 3)],
                             opt.price, [{"transaction_type": "SELL", "quantity": opt.lot, "order_type": "LIMIT",
                                          "product": "NRML", "price": opt.grid(opt.price * 3)}])
        key = f"NFO:{fut.symbol}"
        to = datetime.now().replace(microsecond=0)
        basket = [_leg(fut), _leg(opt, side="SELL")]
        shapes = [
            ("GET", "/orders", {}, list[Order]),
            ("GET", f"/orders/{resting.order_id}", {}, list[Order]),
            ("GET", f"/orders/{placed.order_id}/trades", {}, list[Trade]),
            ("GET", "/trades", {}, list[Trade]),
            ("GET", "/portfolio/positions", {}, Positions),
            ("GET", "/portfolio/holdings", {}, list[Holding]),
            ("GET", "/user/margins", {}, Margins),
            ("GET", "/user/margins/equity", {}, SegmentMargins),
            ("GET", "/user/profile", {}, Profile),
            ("GET", "/gtt/triggers", {}, list[Gtt]),
            ("GET", f"/gtt/triggers/{trigger['trigger_id']}", {}, Gtt),
            ("GET", "/quote", {"params": {"i": [key]}}, dict[str, Quote]),
            ("GET", "/quote/ltp", {"params": {"i": [key]}}, dict[str, LtpQuote]),
            ("GET", "/quote/ohlc", {"params": {"i": [key]}}, dict[str, OhlcQuote]),
            ("POST", "/margins/basket", {"params": {"consider_positions": False}, "json_body": basket}, BasketMargins),
            ("POST", "/margins/basket", {"params": {"mode": "compact"}, "json_body": basket}, BasketMargins),
            ("POST", "/margins/orders", {"json_body": basket}, list[OrderMargins]),
        ]
        for method, path, kw, shape in shapes:  # one answer read both ways: the same document back
            raw = await _raw(http, api, method, path, **kw)
            assert as_json(TypeAdapter(shape).validate_python(raw)) == raw, path

        book, history = await api.orders(), await api.order_history(resting.order_id)
        positions, margins, profile = await api.positions(), await api.margins(), await api.profile()
        gtt = await api.gtt(trigger["trigger_id"])
        quotes, ltps = await api.quote([key]), await api.ltp([key])
        basket_margins = await api.basket_margins(basket, consider_positions=False)
        candles = await api.historical_data(fut.token, to - timedelta(days=5), to, "15minute", oi=True)
        raw_candles = (await _raw(http, api, "GET", f"/instruments/historical/{fut.token}/15minute", params={
            "from": to - timedelta(days=5), "to": to, "interval": "15minute", "continuous": 0, "oi": 1}))["candles"]
    finally:
        await http.close()

    assert {o.order_id for o in book} >= {placed.order_id, resting.order_id} and all(isinstance(o, Order) for o in book)
    assert all(isinstance(o.order_timestamp, datetime) and o.order_timestamp.tzinfo is None for o in book)  # as the SDK
    assert history[-1].quantity == 2 * opt.lot
    assert isinstance(positions, Positions) and positions.net[0].tradingsymbol == fut.symbol
    assert isinstance(margins, Margins) and margins.equity.net is not None
    assert isinstance(profile, Profile) and profile.user_id
    assert isinstance(gtt, Gtt) and gtt.id == trigger["trigger_id"] and gtt.condition.tradingsymbol == opt.symbol
    assert isinstance(gtt.created_at, datetime)
    quote = quotes[key]
    assert isinstance(quote, Quote) and quote.instrument_token == fut.token and quote.ohlc.close is not None
    assert isinstance(quote.timestamp, datetime) and len(quote.depth.buy) == 5
    assert isinstance(ltps[key], LtpQuote) and ltps[key].last_price > 0
    assert isinstance(basket_margins, BasketMargins) and len(basket_margins.orders) == 2
    assert basket_margins.final.total is not None
    assert len(candles) == len(raw_candles) > 0 and all(isinstance(c, Candle) for c in candles)
    first = candles[0]
    assert first.date.utcoffset() == timedelta(hours=5, minutes=30) and first.oi is not None
    assert [first.open, first.high, first.low, first.close, first.volume, first.oi] == raw_candles[0][1:]


async def test_charges_are_typed(kitesim):
    fut = future(kitesim)
    http = KiteHttp(kitesim.url, timeout=10)
    try:
        api = KiteApi(http, kitesim.account.api_key, kitesim.account.access_token)
        note = await api.order_charges([{**_leg(fut), "average_price": fut.price}])
    finally:
        await http.close()
    assert len(note) == 1 and note[0].tradingsymbol == fut.symbol
    assert note[0].charges.total > 0 and note[0].charges.gst.total is not None


def test_models_keep_what_they_do_not_know_and_allow_what_kite_leaves_out() -> None:
    doc = {"order_id": "1", "status": "OPEN", "order_timestamp": "2030-01-02 09:15:00", "new_field": [1, 2]}
    order = Order.model_validate(doc)
    assert order.order_timestamp == datetime(2030, 1, 2, 9, 15) and order.price is None
    assert order.new_field == [1, 2]  # type: ignore[attr-defined]
    assert order.to_json() == doc  # Kite's keys only, its time text back
    odd = Order.model_validate({"order_id": 7, "order_timestamp": "09:15:00"})
    assert odd.order_id == "7" and odd.order_timestamp == "09:15:00"  # left as sent, as the SDK leaves it


def test_an_answer_that_does_not_fit_is_kites_data_problem() -> None:
    with pytest.raises(DataException, match="the order book: 0.order_id") as err:
        _typed(TypeAdapter(list[Order]), [{"status": "OPEN"}], "the order book")
    assert err.value.code == 502


async def test_mutual_fund_answers_are_typed_and_give_back_what_kite_sent(kitesim_factory):
    kitesim = await kitesim_factory(rate_limits=False)
    http = KiteHttp(kitesim.url, timeout=10)
    try:
        api = KiteApi(http, kitesim.account.api_key, kitesim.account.access_token)
        funds = {f.tradingsymbol: f for f in await api.mf_instruments()}
        fund = funds["INF000S01013"]
        assert fund.purchase_allowed is True and fund.minimum_purchase_amount == 500.0 and fund.last_price
        assert fund.to_json()["amc"] == "SimAMC_MF"  # the columns not typed are kept as Kite's text
        assert not funds["INF000S01054"].purchase_allowed
        order_id = (await api.place_mf_order({"tradingsymbol": fund.tradingsymbol, "transaction_type": "BUY",
                                              "amount": 1000, "tag": "t1"})).order_id
        sip_id = (await api.place_mf_sip({"tradingsymbol": fund.tradingsymbol, "amount": 500, "instalments": 3,
                                          "frequency": "weekly", "tag": "s1"})).sip_id
        assert (await api.modify_mf_sip(sip_id, {"status": "PAUSED"})).sip_id == sip_id
        for typed, path in (([o.to_json() for o in await api.mf_orders()], "/mf/orders"),
                            ((await api.mf_order(order_id)).to_json(), f"/mf/orders/{order_id}"),
                            ([s.to_json() for s in await api.mf_sips()], "/mf/sips"),
                            ((await api.mf_sip(sip_id)).to_json(), f"/mf/sips/{sip_id}")):
            assert typed == await _raw(http, api, "GET", path), path
        order = await api.mf_order(order_id)
        assert (order.status, order.tag, order.amount) == ("OPEN", "t1", 1000.0)
        assert isinstance(order.order_timestamp, datetime)
        sip = await api.mf_sip(sip_id)
        assert (sip.status, sip.instalment_amount, sip.tag) == ("PAUSED", 500.0, "s1")
        assert isinstance(sip.created, datetime)
        kitesim.state.mf.publish_nav({fund.tradingsymbol: 50.0})
        [held] = await api.mf_holdings()
        assert (held.tradingsymbol, held.quantity, held.average_price) == (fund.tradingsymbol, 20.0, 50.0)
        assert [h.to_json() for h in await api.mf_holdings()] == await _raw(http, api, "GET", "/mf/holdings")
        assert (await api.cancel_mf_sip(sip_id)).sip_id == sip_id
        assert (await api.mf_sip(sip_id)).status == "CANCELLED"
        second = (await api.place_mf_order({"tradingsymbol": fund.tradingsymbol, "transaction_type": "BUY",
                                            "amount": 200})).order_id
        assert (await api.cancel_mf_order(second)).order_id == second
    finally:
        await http.close()
