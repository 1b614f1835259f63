"""Mutual funds through the real SDK: the instruments CSV, orders that complete at the next NAV
(published through the admin API) and land in holdings, SIPs, and Kite's validation."""

from __future__ import annotations

import pytest
import requests
from kiteconnect import exceptions as kex

from tests.kitesim.trading_helpers import call, kite

ORDER_KEYS = {"order_id", "exchange_order_id", "tradingsymbol", "fund", "status", "status_message", "folio",
              "transaction_type", "variety", "purchase_type", "quantity", "amount", "price", "average_price",
              "last_price", "last_price_date", "placed_by", "tag", "order_timestamp", "exchange_timestamp",
              "settlement_id"}
SIP_KEYS = {"sip_id", "tradingsymbol", "fund", "dividend_type", "transaction_type", "status", "sip_type",
            "created", "frequency", "instalment_amount", "instalments", "last_instalment", "pending_instalments",
            "instalment_day", "completed_instalments", "next_instalment", "trigger_price", "step_up",
            "sip_reg_num", "tag"}
HOLDING_KEYS = {"folio", "fund", "tradingsymbol", "average_price", "last_price", "last_price_date", "pnl",
                "quantity", "pledged_quantity"}


@pytest.fixture
async def mfsim(kitesim_factory):
    """Two accounts; Kite's 10 requests a second would only slow these call-by-call tests down."""
    return await kitesim_factory(rate_limits=False)


async def _funds(k) -> dict[str, dict]:
    return {f["tradingsymbol"]: f for f in await call(k.mf_instruments)}


async def _nav(sim, navs: dict[str, float] | None = None, on: str | None = None) -> dict:
    """Publish the next NAV through the admin API (the stand-in serves in this loop: off it)."""
    body = {"navs": navs or {}, **({"date": on} if on else {})}
    r = await call(requests.post, f"{sim.url}/_sim/mf/nav", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


async def test_instruments_are_kites_csv_parsed_by_the_sdk(mfsim):
    funds = await _funds(kite(mfsim))
    assert len(funds) >= 5
    f = funds["INF000S01013"]
    assert f["purchase_allowed"] is True and f["redemption_allowed"] is True
    assert f["minimum_purchase_amount"] == 500.0 and f["purchase_amount_multiplier"] == 1.0
    assert f["last_price"] > 0 and f["last_price_date"] is not None
    assert {"amc", "name", "dividend_type", "scheme_type", "plan", "settlement_type"} <= set(f)
    assert any(not x["purchase_allowed"] for x in funds.values())
    assert any(not x["redemption_allowed"] for x in funds.values())


async def test_a_purchase_completes_at_the_next_nav_and_shows_in_holdings(mfsim):
    k = kite(mfsim)
    placed = await call(k.place_mf_order, "INF000S01013", "BUY", amount=5000, tag="t1")
    order = await call(k.mf_orders, placed["order_id"])
    assert set(order) == ORDER_KEYS
    assert (order["status"], order["amount"], order["purchase_type"], order["tag"]) == ("OPEN", 5000.0, "FRESH", "t1")
    assert await call(k.mf_holdings) == []
    published = await _nav(mfsim, {"INF000S01013": 50.0})
    assert published["completed"] == 1
    done = await call(k.mf_orders, placed["order_id"])
    assert (done["status"], done["average_price"], done["quantity"]) == ("COMPLETE", 50.0, 100.0)
    assert done["folio"]
    [holding] = await call(k.mf_holdings)
    assert set(holding) == HOLDING_KEYS
    assert (holding["tradingsymbol"], holding["quantity"], holding["average_price"], holding["folio"]) == \
        ("INF000S01013", 100.0, 50.0, done["folio"])
    await _nav(mfsim, {"INF000S01013": 55.0})
    [holding] = await call(k.mf_holdings)
    assert holding["last_price"] == 55.0 and holding["pnl"] == 500.0
    assert [o["order_id"] for o in await call(k.mf_orders)] == [placed["order_id"]]


async def test_a_redemption_needs_units_and_the_funds_quantity_rules(mfsim):
    k = kite(mfsim)
    with pytest.raises(kex.InputException, match="Insufficient units"):
        await call(k.place_mf_order, "INF000S01013", "SELL", quantity=1)
    await call(k.place_mf_order, "INF000S01013", "BUY", amount=1000)
    await _nav(mfsim, {"INF000S01013": 10.0})
    with pytest.raises(kex.InputException, match="multiple of 0.001"):
        await call(k.place_mf_order, "INF000S01013", "SELL", quantity=1.0005)
    sell = await call(k.place_mf_order, "INF000S01013", "SELL", quantity=40)
    with pytest.raises(kex.InputException, match="Insufficient units"):
        await call(k.place_mf_order, "INF000S01013", "SELL", quantity=61)
    await _nav(mfsim, {"INF000S01013": 12.0})
    done = await call(k.mf_orders, sell["order_id"])
    assert (done["status"], done["amount"]) == ("COMPLETE", 480.0)
    [holding] = await call(k.mf_holdings)
    assert holding["quantity"] == 60.0 and holding["average_price"] == 10.0
    with pytest.raises(kex.InputException, match="minimum redemption quantity"):
        await call(k.place_mf_order, "INF000S01047", "SELL", quantity=0.5)
    with pytest.raises(kex.InputException, match="Redemptions are not allowed"):
        await call(k.place_mf_order, "INF000S01039", "SELL", quantity=1)


async def test_purchase_amount_rules_and_cancelling(mfsim):
    k = kite(mfsim)
    with pytest.raises(kex.InputException, match="minimum purchase amount for this fund is 500"):
        await call(k.place_mf_order, "INF000S01013", "BUY", amount=499)
    with pytest.raises(kex.InputException, match="multiple of 100"):
        await call(k.place_mf_order, "INF000S01047", "BUY", amount=5050)
    with pytest.raises(kex.InputException, match="Purchases are not allowed"):
        await call(k.place_mf_order, "INF000S01054", "BUY", amount=10000)
    with pytest.raises(kex.InputException, match="tradingsymbol"):
        await call(k.place_mf_order, "INF999X99999", "BUY", amount=10000)
    with pytest.raises(kex.InputException, match="amount"):
        await call(k.place_mf_order, "INF000S01013", "BUY")
    placed = await call(k.place_mf_order, "INF000S01039", "BUY", amount=1500)
    assert (await call(k.cancel_mf_order, placed["order_id"]))["order_id"] == placed["order_id"]
    assert (await call(k.mf_orders, placed["order_id"]))["status"] == "CANCELLED"
    with pytest.raises(kex.InputException, match="CANCELLED"):
        await call(k.cancel_mf_order, placed["order_id"])
    with pytest.raises(kex.InputException) as missing:
        await call(k.mf_orders, "no-such-order")
    assert missing.value.code == 404
    assert (await _nav(mfsim))["completed"] == 0  # the cancelled order is not allotted


async def test_additional_purchases_follow_the_additional_minimum(mfsim):
    k = kite(mfsim)
    await call(k.place_mf_order, "INF000S01047", "BUY", amount=5000)
    with pytest.raises(kex.InputException, match="minimum purchase amount"):
        await call(k.place_mf_order, "INF000S01047", "BUY", amount=1000)
    await _nav(mfsim)
    extra = await call(k.place_mf_order, "INF000S01047", "BUY", amount=1000)
    assert (await call(k.mf_orders, extra["order_id"]))["purchase_type"] == "ADDITIONAL"


async def test_a_sip_is_registered_modified_and_cancelled(mfsim):
    k = kite(mfsim)
    placed = await call(k.place_mf_sip, "INF000S01013", 1000, 12, "monthly", initial_amount=5000,
                        instalment_day=5, tag="sip1")
    sip = await call(k.mf_sips, placed["sip_id"])
    assert set(sip) == SIP_KEYS
    assert (sip["status"], sip["frequency"], sip["instalment_day"], sip["instalments"], sip["instalment_amount"],
            sip["pending_instalments"]) == ("ACTIVE", "monthly", 5, 12, 1000.0, 12)
    assert sip["next_instalment"].endswith("-05")
    [initial] = await call(k.mf_orders)
    assert (initial["variety"], initial["amount"], initial["status"]) == ("sip", 5000.0, "OPEN")
    await call(k.modify_mf_sip, placed["sip_id"], amount=2000, status="PAUSED")
    sip = await call(k.mf_sips, placed["sip_id"])
    assert (sip["status"], sip["instalment_amount"]) == ("PAUSED", 2000.0)
    await call(k.modify_mf_sip, placed["sip_id"], status="ACTIVE", frequency="weekly")
    sip = await call(k.mf_sips, placed["sip_id"])
    assert (sip["status"], sip["frequency"], sip["instalment_day"]) == ("ACTIVE", "weekly", 0)
    assert [s["sip_id"] for s in await call(k.mf_sips)] == [placed["sip_id"]]
    assert (await call(k.cancel_mf_sip, placed["sip_id"]))["sip_id"] == placed["sip_id"]
    assert (await call(k.mf_sips, placed["sip_id"]))["status"] == "CANCELLED"
    with pytest.raises(kex.InputException, match="CANCELLED"):
        await call(k.modify_mf_sip, placed["sip_id"], status="ACTIVE")


async def test_sip_instalments_are_placed_when_the_nav_date_reaches_them(mfsim):
    k = kite(mfsim)
    placed = await call(k.place_mf_sip, "INF000T01012", 500, 2, "weekly")
    sip = await call(k.mf_sips, placed["sip_id"])
    due = sip["next_instalment"]
    assert (await _nav(mfsim, on=due))["instalments"] == 1
    sip = await call(k.mf_sips, placed["sip_id"])
    assert (sip["completed_instalments"], sip["pending_instalments"]) == (1, 1)
    [order] = await call(k.mf_orders)
    assert (order["variety"], order["amount"], order["status"]) == ("sip", 500.0, "OPEN")
    await _nav(mfsim)
    assert (await call(k.mf_orders, order["order_id"]))["status"] == "COMPLETE"
    assert [h["tradingsymbol"] for h in await call(k.mf_holdings)] == ["INF000T01012"]


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("INF000S01013", 1000, 12, "daily"), {}, "frequency"),
    (("INF000S01013", 1000, 12, "monthly"), {}, "instalment_day"),
    (("INF000S01013", 1000, 12, "monthly"), {"instalment_day": 29}, "instalment_day"),
    (("INF000S01013", 1000, 0, "weekly"), {}, "instalments"),
    (("INF000S01013", 50, 12, "weekly"), {}, "minimum SIP instalment"),
    (("INF000S01039", 600, 12, "weekly"), {}, "multiple of 500"),
    (("INF000S01054", 1000, 12, "weekly"), {}, "Purchases are not allowed"),
    (("INF000S01013", 1000, 12, "weekly"), {"initial_amount": 100}, "initial_amount"),
])
async def test_sip_rules(mfsim, args, kwargs, message):
    with pytest.raises(kex.InputException, match=message):
        await call(kite(mfsim).place_mf_sip, *args, **kwargs)


async def test_modifying_a_sip_checks_status_and_amount(mfsim):
    k = kite(mfsim)
    placed = await call(k.place_mf_sip, "INF000S01013", 1000, -1, "quarterly", instalment_day=10)
    assert (await call(k.mf_sips, placed["sip_id"]))["pending_instalments"] == -1
    with pytest.raises(kex.InputException, match="status"):
        await call(k.modify_mf_sip, placed["sip_id"], status="CANCELLED")
    with pytest.raises(kex.InputException, match="minimum SIP instalment"):
        await call(k.modify_mf_sip, placed["sip_id"], amount=10)
    with pytest.raises(kex.InputException) as missing:
        await call(k.modify_mf_sip, "123", status="PAUSED")
    assert missing.value.code == 404


async def test_mf_books_are_per_account(mfsim):
    a, b = kite(mfsim, 0), kite(mfsim, 1)
    placed = await call(a.place_mf_order, "INF000S01013", "BUY", amount=1000)
    assert await call(b.mf_orders) == []
    with pytest.raises(kex.InputException):
        await call(b.mf_orders, placed["order_id"])
