"""Kite's GTT validations: what a place/modify request (`type`, `condition`, `orders`) must carry.

Rules (Kite's GTT documentation and Zerodha's GTT terms):
- `type` is `single` (one trigger value, one order) or `two-leg` (OCO: two trigger values, two
  orders; the lower value is the stop-loss below the last price, the upper the target above it,
  and `orders[i]` is placed when `trigger_values[i]` is hit).
- `condition` is a JSON object: exchange, tradingsymbol, trigger_values (JSON array), last_price.
- `orders` is a JSON array of exchange, tradingsymbol, transaction_type, quantity, order_type,
  product, price. Orders are LIMIT (MARKET is taken too: it is placed with automatic market
  protection); product CNC on NSE/BSE and NRML on NFO/BFO.
- Each trigger value must be at least 0.25% away from the last price, or 9 paise when the last
  price is ₹50 or below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from ticker.infra.kitesim.envelopes import input_error
from ticker.infra.kitesim.order_rules import TRANSACTION_TYPES, check_instrument
from ticker.infra.kitesim.universe import Universe

GTT_TYPES = ("single", "two-leg")
GTT_ORDER_TYPES = ("LIMIT", "MARKET")
GTT_PRODUCTS = {"NSE": "CNC", "BSE": "CNC", "NFO": "NRML", "BFO": "NRML"}
MIN_GAP_PCT, MIN_GAP_ABS, GAP_PRICE_LINE = 0.0025, 0.09, 50.0


@dataclass(frozen=True)
class GttLeg:
    transaction_type: str
    quantity: int
    order_type: str
    product: str
    price: float


@dataclass(frozen=True)
class GttSpec:
    """A validated place/modify request."""

    type: str
    row: int
    exchange: str
    tradingsymbol: str
    trigger_values: tuple[float, ...]
    last_price: float
    legs: tuple[GttLeg, ...]


def _json(form: dict[str, str], name: str) -> Any:
    raw = (form.get(name) or "").strip()
    if not raw:
        raise input_error(f"Missing or empty field `{name}`.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise input_error(f"Invalid `{name}`: not valid JSON.") from None


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise input_error(f"Invalid `{name}`: must be a number.")
    try:
        number = float(value)
    except ValueError:
        raise input_error(f"Invalid `{name}`: must be a number.") from None
    if not math.isfinite(number) or number <= 0:
        raise input_error(f"Invalid `{name}`: must be greater than 0.")
    return number


def parse_gtt(form: dict[str, str], uni: Universe) -> GttSpec:
    gtt_type = (form.get("type") or "").strip()
    if gtt_type not in GTT_TYPES:
        raise input_error(f"Invalid `type`. Allowed: {', '.join(GTT_TYPES)}.")
    cond = _json(form, "condition")
    if not isinstance(cond, dict):
        raise input_error("Invalid `condition`: must be a JSON object.")
    exchange, symbol = str(cond.get("exchange") or ""), str(cond.get("tradingsymbol") or "")
    row = uni.row_of_symbol.get((exchange, symbol))
    if row is None:
        raise input_error("The instrument you are placing a GTT for has either expired or does not exist.")
    values = cond.get("trigger_values")
    if not isinstance(values, list):
        raise input_error("Invalid `trigger_values`: must be a JSON array.")
    triggers = tuple(_positive(v, "trigger_values") for v in values)
    last = _positive(cond.get("last_price"), "last_price")
    _check_triggers(gtt_type, triggers, last)
    raw_orders = _json(form, "orders")
    if not isinstance(raw_orders, list) or not all(isinstance(o, dict) for o in raw_orders):
        raise input_error("Invalid `orders`: must be a JSON array of orders.")
    if len(raw_orders) != len(triggers):
        raise input_error(f"A {gtt_type} GTT takes {len(triggers)} order(s), one per trigger value.")
    legs = tuple(_leg(o, exchange, symbol, row, uni) for o in raw_orders)
    return GttSpec(gtt_type, row, exchange, symbol, triggers, last, legs)


def _check_triggers(gtt_type: str, triggers: tuple[float, ...], last: float) -> None:
    want = 1 if gtt_type == "single" else 2
    if len(triggers) != want:
        raise input_error(f"Invalid `trigger_values`: a {gtt_type} GTT takes exactly {want}.")
    if gtt_type == "two-leg" and not triggers[0] < last < triggers[1]:
        raise input_error("Invalid `trigger_values`: for a two-leg GTT the first (stop-loss) must be "
                          "below the last price and the second (target) above it.")
    gap = last * MIN_GAP_PCT if last > GAP_PRICE_LINE else MIN_GAP_ABS
    for value in triggers:
        if abs(value - last) < gap - 1e-9:
            raise input_error(f"Trigger price {value:g} is too close to the last price {last:g}: it must "
                              f"differ by at least {gap:.2f} (0.25%, or ₹0.09 at ₹50 and below).")


def _leg(o: dict, exchange: str, symbol: str, row: int, uni: Universe) -> GttLeg:
    if o.get("exchange", exchange) != exchange or o.get("tradingsymbol", symbol) != symbol:
        raise input_error("Every GTT order must be for the instrument in `condition`.")
    side = o.get("transaction_type")
    if side not in TRANSACTION_TYPES:
        raise input_error(f"Invalid `transaction_type`. Allowed: {', '.join(TRANSACTION_TYPES)}.")
    order_type = o.get("order_type")
    if order_type not in GTT_ORDER_TYPES:
        raise input_error(f"Invalid `order_type` for a GTT order. Allowed: {', '.join(GTT_ORDER_TYPES)}.")
    product = o.get("product")
    if product != GTT_PRODUCTS.get(exchange):
        raise input_error(f"Invalid `product`: GTT orders on {exchange} must be "
                          f"{GTT_PRODUCTS.get(exchange, 'CNC or NRML')}.")
    quantity = _positive(o.get("quantity"), "quantity")
    if not quantity.is_integer():
        raise input_error("Invalid `quantity`: must be a whole number.")
    price = _positive(o.get("price"), "price") if order_type == "LIMIT" else 0.0
    check_instrument(int(quantity), price, 0.0, int(uni.lot[row]), float(uni.tick[row]),
                     not uni.is_index_row[row])
    return GttLeg(side, int(quantity), order_type, str(product), price)
