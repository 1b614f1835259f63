"""Kite's mutual-fund rules as the intake applies them (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ticker.core.mutual_funds import (
    MfFund,
    MfOrderRequest,
    MfSipModify,
    MfSipRequest,
    funds_of,
    holds,
    plan_mf,
    validate_mf_order,
    validate_sip,
)

FUND = MfFund(tradingsymbol="INF000S01047", name="Bond", minimum_purchase_amount=5000, purchase_amount_multiplier=100,
              minimum_additional_purchase_amount=1000, minimum_redemption_quantity=1, redemption_quantity_multiplier=0.001)
FUNDS = {FUND.tradingsymbol: FUND}


def buy(amount: float) -> MfOrderRequest:
    return MfOrderRequest(tradingsymbol=FUND.tradingsymbol, transaction_type="BUY", amount=amount)


def fields(issues) -> list[str]:
    return [i.field for i in issues]


def test_purchases_follow_the_minimum_for_a_fresh_or_an_additional_purchase() -> None:
    assert fields(validate_mf_order(buy(4900), FUNDS, held=False)) == ["amount"]
    assert validate_mf_order(buy(5000), FUNDS, held=False) == []
    assert validate_mf_order(buy(1000), FUNDS, held=True) == []
    assert validate_mf_order(buy(1000), FUNDS, held=None) == []  # not known: the lower minimum
    assert fields(validate_mf_order(buy(5050), FUNDS, held=False)) == ["amount"]  # not a multiple of 100
    assert validate_mf_order(buy(10), None, held=None) == []  # the funds are not known: nothing to check


def test_redemptions_and_closed_funds() -> None:
    sell = MfOrderRequest(tradingsymbol=FUND.tradingsymbol, transaction_type="SELL", quantity=0.5)
    assert fields(validate_mf_order(sell, FUNDS, held=True)) == ["quantity"]
    closed = {FUND.tradingsymbol: FUND.model_copy(update={"redemption_allowed": False})}
    assert fields(validate_mf_order(sell.model_copy(update={"quantity": 2.0}), closed, True)) == ["tradingsymbol"]
    unknown = buy(5000).model_copy(update={"tradingsymbol": "INF999X99999"})
    assert fields(validate_mf_order(unknown, FUNDS, held=None)) == ["tradingsymbol"]


def test_request_shapes() -> None:
    with pytest.raises(ValidationError):
        MfOrderRequest(tradingsymbol="INF000S01047", transaction_type="BUY", quantity=1)
    with pytest.raises(ValidationError):
        MfSipRequest(tradingsymbol="INF000S01047", amount=1000, instalments=12, frequency="monthly")
    with pytest.raises(ValidationError):
        MfSipModify()
    sip = MfSipRequest(tradingsymbol="INF000S01047", amount=1000, instalments=-1, frequency="weekly",
                       initial_amount=100)
    assert fields(validate_sip(sip, FUNDS, held=False)) == ["initial_amount"]


def test_snapshot_rows_and_plans() -> None:
    rows = [{"tradingsymbol": "INF1", "purchase_allowed": "1", "minimum_purchase_amount": "500.0", "amc": "X"}]
    assert funds_of(rows)["INF1"].minimum_purchase_amount == 500.0
    assert holds([{"tradingsymbol": "INF1", "quantity": 1.5}], "INF1") and not holds([], "INF1")
    one, two = (plan_mf("mf_place", "a1", "key-1", order=buy(5000)) for _ in range(2))
    assert one.job_id == two.job_id and one.job_id.startswith("mf-place-")  # the key fixes the job
    assert plan_mf("mf_place", "a2", "key-1", order=buy(5000)).job_id != one.job_id  # scoped by account
