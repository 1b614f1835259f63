"""convert_position through the real SDK: moving an open position between products, and Kite's
refusals."""

from __future__ import annotations

import pytest
from kiteconnect import exceptions as kex

from tests.kitesim.trading_helpers import call, kite, option


async def _buy(k, inst, qty: int, product: str = "MIS", side: str = "BUY") -> None:
    price = inst.grid(inst.price * (1.5 if side == "BUY" else 0.5))
    await call(k.place_order, variety="regular", exchange="NFO", tradingsymbol=inst.symbol, transaction_type=side,
               quantity=qty, product=product, order_type="LIMIT", price=price)


def _by_product(positions: dict) -> dict[str, dict]:
    return {p["product"]: p for p in positions["net"]}


async def test_convert_moves_quantity_between_products(kitesim):
    k, inst = kite(kitesim), option(kitesim)
    await _buy(k, inst, 2 * inst.lot)
    before = _by_product(await call(k.positions))["MIS"]
    assert await call(k.convert_position, "NFO", inst.symbol, "BUY", "day", inst.lot, "MIS", "NRML") is True
    after = _by_product(await call(k.positions))
    assert after["MIS"]["quantity"] == after["NRML"]["quantity"] == inst.lot
    assert after["NRML"]["average_price"] == pytest.approx(before["average_price"])
    assert await call(k.convert_position, "NFO", inst.symbol, "BUY", "day", inst.lot, "MIS", "NRML") is True
    after = _by_product(await call(k.positions))
    assert set(after) == {"NRML"} and after["NRML"]["quantity"] == 2 * inst.lot
    assert after["NRML"]["buy_value"] == pytest.approx(before["buy_value"])


async def test_convert_a_short_position(kitesim):
    k, inst = kite(kitesim), option(kitesim, put=True)
    await _buy(k, inst, inst.lot, product="NRML", side="SELL")
    assert await call(k.convert_position, "NFO", inst.symbol, "SELL", "day", inst.lot, "NRML", "MIS") is True
    [pos] = (await call(k.positions))["net"]
    assert pos["product"] == "MIS" and pos["quantity"] == -inst.lot


@pytest.mark.parametrize("args, match", [
    ({"quantity": 3}, "Insufficient"),          # more lots than held
    ({"transaction_type": "SELL"}, "Insufficient"),  # the position is long, not short
    ({"old_product": "NRML", "new_product": "MIS"}, "Insufficient"),  # nothing held in NRML
    ({"new_product": "CNC"}, "not allowed"),
    ({"new_product": "MIS"}, "same"),
    ({"position_type": "overnight"}, "overnight"),
    ({"position_type": "week"}, "position_type"),
    ({"quantity_offset": 1}, "lot size"),
    ({"tradingsymbol": "NOSUCH26DEC1CE"}, "does not exist"),
])
async def test_convert_refusals(kitesim, args, match):
    k, inst = kite(kitesim), option(kitesim)
    await _buy(k, inst, 2 * inst.lot)
    params = {"exchange": "NFO", "tradingsymbol": args.get("tradingsymbol", inst.symbol),
              "transaction_type": args.get("transaction_type", "BUY"),
              "position_type": args.get("position_type", "day"),
              "quantity": args.get("quantity", 1) * inst.lot + args.get("quantity_offset", 0),
              "old_product": args.get("old_product", "MIS"), "new_product": args.get("new_product", "NRML")}
    with pytest.raises(kex.InputException, match=match) as err:
        await call(k.convert_position, **params)
    assert err.value.code == 400
    [pos] = (await call(k.positions))["net"]
    assert pos["product"] == "MIS" and pos["quantity"] == 2 * inst.lot
