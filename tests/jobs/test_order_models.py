"""Order request models and Kite-style validation (pure)."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from ticker.core.instruments import Instrument
from ticker.core.order_intake import IntakeRules, freeze_of, prepare_modify, prepare_order
from ticker.core.orders import (
    BasketRequest,
    ModifyRequest,
    OrderRequest,
    OrderValidationError,
    check_order,
    kite_tag,
    order_job_id,
    plan_basket,
    plan_place,
    validate_modify,
    validate_order,
)

OPTION = Instrument(instrument_token=12345 << 8 | 2, exchange_token=12345, tradingsymbol="NIFTY25NOV24000CE",
                    name="NIFTY", strike=24000, tick_size=0.05, lot_size=75, instrument_type="CE",
                    segment="NFO-OPT", exchange="NFO")
STOCK = Instrument(instrument_token=2885 << 8 | 1, exchange_token=2885, tradingsymbol="RELIANCE",
                   name="RELIANCE", tick_size=0.1, lot_size=1, instrument_type="EQ", segment="NSE", exchange="NSE")
INDEX = Instrument(instrument_token=256265, exchange_token=1001, tradingsymbol="NIFTY 50", tick_size=0,
                   lot_size=0, instrument_type="EQ", segment="INDICES", exchange="NSE")


def opt(**kw) -> OrderRequest:
    base = dict(exchange="NFO", tradingsymbol="NIFTY25NOV24000CE", transaction_type="BUY", quantity=75,
                product="NRML", order_type="LIMIT", price=101.05)
    return OrderRequest(**{**base, **kw})


def fields(issues) -> list[str]:
    return [i.field for i in issues]


def test_valid_limit_and_market_orders_pass() -> None:
    assert validate_order(opt(), OPTION) == []
    assert validate_order(opt(order_type="MARKET", price=None, quantity=150, market_protection=-1), OPTION) == []
    stock = OrderRequest(exchange="NSE", tradingsymbol="RELIANCE", transaction_type="SELL", quantity=3,
                         product="CNC", order_type="SL", price=2500.0, trigger_price=2500.5)
    assert validate_order(stock, STOCK) == []


@pytest.mark.parametrize(("change", "field"), [
    ({"quantity": 70}, "quantity"),
    ({"price": 101.03}, "price"),
    ({"price": None}, "price"),
    ({"order_type": "SL", "trigger_price": None}, "trigger_price"),
    ({"order_type": "SL-M", "price": None, "trigger_price": 100.01}, "trigger_price"),
    ({"order_type": "SL", "price": 100.0, "trigger_price": 100.5}, "trigger_price"),
    ({"product": "CNC"}, "product"),
    ({"validity": "TTL"}, "validity_ttl"),
    ({"variety": "iceberg", "iceberg_legs": 2}, "iceberg_quantity"),
    ({"variety": "auction"}, "auction_number"),
    ({"order_type": "MARKET"}, "price"),
    ({"order_type": "MARKET", "price": None}, "market_protection"),
    ({"order_type": "SL-M", "price": None, "trigger_price": 100.0}, "market_protection"),
    ({"disclosed_quantity": 150}, "disclosed_quantity"),
    ({"variety": "co", "product": "MIS"}, "trigger_price"),
    ({"variety": "iceberg", "iceberg_quantity": 75}, "iceberg_legs"),
    ({"variety": "iceberg", "iceberg_legs": 2, "iceberg_quantity": 150}, "iceberg_quantity"),
])
def test_kite_rules_name_the_field(change: dict, field: str) -> None:
    issues = validate_order(opt(**change), OPTION)
    assert field in fields(issues), issues


def test_lot_message_matches_kite_wording() -> None:
    (issue,) = validate_order(opt(quantity=80), OPTION)
    assert issue.message == "Quantity should be a multiple of lot size 75."


def test_unknown_or_index_instrument_is_refused() -> None:
    assert fields(validate_order(opt(), None)) == ["tradingsymbol"]
    assert fields(validate_order(opt(tradingsymbol="OTHER"), OPTION)) == ["tradingsymbol"]
    idx = OrderRequest(exchange="NSE", tradingsymbol="NIFTY 50", transaction_type="BUY", quantity=1,
                       product="MIS", order_type="MARKET")
    assert "index" in validate_order(idx, INDEX)[0].message


def test_check_order_raises_first_issue_with_all_attached() -> None:
    with pytest.raises(OrderValidationError) as err:
        check_order(opt(quantity=70, price=101.01), OPTION)
    assert err.value.field == "quantity"
    assert fields(err.value.issues) == ["quantity", "price"]


@pytest.mark.parametrize("bad", [
    {"quantity": 0}, {"quantity": -75}, {"transaction_type": "HOLD"}, {"product": "XYZ"},
    {"order_type": "STOP"}, {"variety": "bracket"}, {"validity": "GTC"}, {"exchange": "NYSE"},
    {"price": -1}, {"unknown": 1}, {"tag": "has space"}, {"tag": "x" * 21}, {"price": float("nan")},
])
def test_model_rejects_bad_types_and_enums(bad: dict) -> None:
    with pytest.raises(ValidationError) as err:
        opt(**bad)
    assert err.value.errors()[0]["loc"][0] in bad


def test_modify_needs_a_change_and_respects_tick_and_lot() -> None:
    assert fields(validate_modify(ModifyRequest(order_id="1"))) == ["order_id"]
    assert validate_modify(ModifyRequest(order_id="1", price=10.05), OPTION) == []
    assert fields(validate_modify(ModifyRequest(order_id="1", quantity=10, price=10.01), OPTION)) == [
        "quantity", "price"]


def test_ids_and_tags_are_deterministic_and_fit_kite() -> None:
    a = order_job_id("place", "key-1", "acct")
    assert a == order_job_id("place", "key-1", "acct")
    assert a != order_job_id("place", "key-1", "other") != order_job_id("place", None)
    assert order_job_id("place", None) != order_job_id("place", None)
    tag = kite_tag(a)
    assert len(tag) <= 20 and tag.isalnum() and tag == kite_tag(a) and tag != kite_tag(a + "x")


def test_kite_params_carry_the_derived_tag_not_the_client_tag() -> None:
    params = opt(tag="mine", account_id="acct").kite_params("tkabc")
    assert params["tag"] == "tkabc"
    assert "account_id" not in params and "variety" not in params
    assert params["price"] == 101.05 and params["quantity"] == 75


def test_basket_plan_gives_each_leg_its_own_stable_job_on_the_named_account() -> None:
    basket = BasketRequest(account_id="acct2", legs=[opt(), opt(transaction_type="SELL", account_id="acct3")])
    plan = plan_basket(basket, "b-1")
    again = plan_basket(basket, "b-1")
    assert [leg.job_id for leg in plan.legs] == [leg.job_id for leg in again.legs]
    assert len({leg.job_id for leg in plan.legs}) == 2
    assert [leg.account_id for leg in plan.legs] == ["acct2", "acct3"]
    assert all(leg.payload["basket_id"] == plan.basket_id for leg in plan.legs)
    single = plan_place(opt(), "k")
    assert single.payload["order"]["tradingsymbol"] == "NIFTY25NOV24000CE"


# --- Kite's 2026 rules at intake -----------------------------------------------------------------
NIFTY_JAN = Instrument(instrument_token=23456 << 8 | 2, exchange_token=23456, tradingsymbol="NIFTY26JAN25000CE",
                       name="NIFTY", expiry=date(2026, 1, 27), strike=25000, tick_size=0.05, lot_size=65,
                       instrument_type="CE", segment="NFO-OPT", exchange="NFO")
STOCK_FUT = Instrument(instrument_token=34567 << 8 | 2, exchange_token=34567, tradingsymbol="RELIANCE26JANFUT",
                       name="RELIANCE", expiry=date(2026, 1, 27), tick_size=0.1, lot_size=500,
                       instrument_type="FUT", segment="NFO-FUT", exchange="NFO")
JAN = IntakeRules(today=date(2026, 1, 5))


def nifty(**kw) -> OrderRequest:
    base = dict(exchange="NFO", tradingsymbol="NIFTY26JAN25000CE", transaction_type="BUY", quantity=65,
                product="NRML", order_type="MARKET")
    return OrderRequest(**{**base, **kw})


@pytest.mark.parametrize("bad", [0, 0.5, 2.5, 101, -2, True, "auto", float("inf")])
def test_market_protection_is_minus_one_or_a_whole_percent(bad) -> None:
    with pytest.raises(ValidationError) as err:
        nifty(market_protection=bad)
    assert err.value.errors()[0]["loc"] == ("market_protection",)
    assert "-1" in str(err.value) and "1 to 100" in str(err.value)
    with pytest.raises(ValidationError):
        ModifyRequest(order_id="1", order_type="MARKET", market_protection=bad)


def test_intake_gives_market_and_slm_orders_the_default_protection() -> None:
    assert [nifty(market_protection=v).market_protection for v in (-1, 1, 100, "5", 7.0)] == [-1, 1, 100, 5, 7]
    assert prepare_order(nifty(), NIFTY_JAN, JAN).market_protection == -1
    assert prepare_order(nifty(market_protection=3), NIFTY_JAN, JAN).market_protection == 3  # the client's own
    assert prepare_order(nifty(), NIFTY_JAN, IntakeRules(market_protection=5, today=JAN.today)).market_protection == 5
    stop = nifty(order_type="SL-M", trigger_price=101.0)
    assert prepare_order(stop, NIFTY_JAN, JAN).kite_params("tk")["market_protection"] == -1
    limit = prepare_order(nifty(order_type="LIMIT", price=101.0), NIFTY_JAN, JAN)
    assert limit.market_protection is None and "market_protection" not in limit.kite_params("tk")
    into_market = prepare_modify(ModifyRequest(order_id="1", order_type="MARKET"), None, JAN)
    assert into_market.kite_params()["market_protection"] == -1
    assert prepare_modify(ModifyRequest(order_id="1", price=10.05), NIFTY_JAN, JAN).market_protection is None


def test_quantity_over_the_freeze_limit_needs_autoslice() -> None:
    # NIFTY: freeze 1,800 units from 1 Sep 2025; lot 65 in the January 2026 series, so a slice is 1,755.
    with pytest.raises(OrderValidationError) as err:
        prepare_order(nifty(quantity=65 * 28), NIFTY_JAN, JAN)
    assert err.value.field == "quantity" and "freeze limit of 1800" in err.value.message
    sliced = prepare_order(nifty(quantity=65 * 28, autoslice=True), NIFTY_JAN, JAN)
    assert sliced.kite_params("tk")["autoslice"] is True
    assert prepare_order(nifty(quantity=1755 * 10, autoslice=True), NIFTY_JAN, JAN).autoslice  # ten slices
    with pytest.raises(OrderValidationError) as err:
        prepare_order(nifty(quantity=1755 * 10 + 65, autoslice=True), NIFTY_JAN, JAN)
    assert err.value.field == "quantity" and "at most 10 slices of 1755" in err.value.message
    # an order that fits in one goes as one: Kite refuses to slice what needs no slicing
    assert prepare_order(nifty(quantity=1755, autoslice=True), NIFTY_JAN, JAN).autoslice is None
    assert prepare_order(nifty(autoslice=False), NIFTY_JAN, JAN).autoslice is None


def test_freeze_limits_follow_the_dated_table_and_iceberg_legs_fit_them() -> None:
    bank = NIFTY_JAN.model_copy(update={"name": "BANKNIFTY", "tradingsymbol": "BANKNIFTY26JAN58000CE",
                                        "lot_size": 30})
    order = nifty(tradingsymbol="BANKNIFTY26JAN58000CE", quantity=30 * 25)
    assert prepare_order(order, bank, IntakeRules(today=date(2025, 11, 15))).quantity == 750  # 900 then
    with pytest.raises(OrderValidationError, match="freeze limit of 600"):
        prepare_order(order, bank, IntakeRules(today=date(2025, 12, 15)))
    iceberg = nifty(variety="iceberg", order_type="LIMIT", price=101.0, quantity=65 * 60, iceberg_legs=2,
                    iceberg_quantity=65 * 30)
    with pytest.raises(OrderValidationError) as err:
        prepare_order(iceberg, NIFTY_JAN, JAN)
    assert err.value.field == "iceberg_quantity" and "1800" in err.value.message
    fits = iceberg.model_copy(update={"iceberg_legs": 3, "iceberg_quantity": 65 * 20})
    assert prepare_order(fits, NIFTY_JAN, JAN).quantity == 65 * 60  # legs within the limit, the whole need not be
    with pytest.raises(OrderValidationError) as err:
        prepare_order(fits.model_copy(update={"autoslice": True}), NIFTY_JAN, JAN)
    assert err.value.field == "autoslice"


def test_contracts_without_a_known_freeze_limit_are_left_to_kite() -> None:
    big = OrderRequest(exchange="NFO", tradingsymbol="RELIANCE26JANFUT", transaction_type="SELL", quantity=500 * 50,
                       product="NRML", order_type="MARKET", autoslice=True)
    assert prepare_order(big, STOCK_FUT, JAN).autoslice is True  # the client's word stands
    assert freeze_of(STOCK_FUT, JAN.day()) is None and freeze_of(STOCK, JAN.day()) == 0


def test_a_modification_cannot_be_sliced() -> None:
    with pytest.raises(OrderValidationError) as err:
        prepare_modify(ModifyRequest(order_id="1", quantity=65 * 28), NIFTY_JAN, JAN)
    assert err.value.field == "quantity" and "1800" in err.value.message
    assert prepare_modify(ModifyRequest(order_id="1", quantity=65 * 27), NIFTY_JAN, JAN).quantity == 1755
