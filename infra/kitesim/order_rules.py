"""Kite's order validations: what a place/modify request must carry, checked before anything happens.

Messages follow Kite's wording where known; the `error_type` (InputException / OrderException) is
what clients act on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ticker.infra.kitesim.errors import input_error, order_error

VARIETIES = ("regular", "amo", "co", "iceberg", "auction")
EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX")
TRANSACTION_TYPES = ("BUY", "SELL")
ORDER_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
PRODUCTS = ("CNC", "NRML", "MIS", "MTF")
VALIDITIES = ("DAY", "IOC", "TTL")
MAX_TAG = 20
MAX_MODIFICATIONS = 25
_TAG = re.compile(r"^[A-Za-z0-9_\-.:]*$")


@dataclass(frozen=True)
class OrderRequest:
    """A validated POST /orders/{variety} body."""

    variety: str
    exchange: str
    tradingsymbol: str
    transaction_type: str
    quantity: int
    product: str
    order_type: str
    price: float
    trigger_price: float
    validity: str
    disclosed_quantity: int
    tag: str | None


def _choice(form: dict[str, str], name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    value = (form.get(name) or "").strip() or default
    if value is None:
        raise input_error(f"Missing or empty field `{name}`.")
    if value not in allowed:
        raise input_error(f"Invalid `{name}`. Allowed: {', '.join(allowed)}.")
    return value


def _number(form: dict[str, str], name: str, default: float = 0.0) -> float:
    raw = (form.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise input_error(f"Invalid `{name}`: {raw!r} is not a number.") from None
    if not math.isfinite(value) or value < 0:
        raise input_error(f"Invalid `{name}`: must be a non-negative number.")
    return value


def _integer(form: dict[str, str], name: str, required: bool) -> int:
    raw = (form.get(name) or "").strip()
    if not raw:
        if required:
            raise input_error(f"Missing or empty field `{name}`.")
        return 0
    try:
        value = float(raw)
    except ValueError:
        raise input_error(f"Invalid `{name}`: {raw!r} is not a number.") from None
    if not value.is_integer() or value < 0:
        raise input_error(f"Invalid `{name}`: must be a whole number.")
    return int(value)


def parse_place(variety: str, form: dict[str, str]) -> OrderRequest:
    """Field-level checks of a new order (instrument checks come after, in `check_instrument`)."""
    if variety not in VARIETIES:
        raise input_error(f"Invalid `variety`. Allowed: {', '.join(VARIETIES)}.")
    symbol = (form.get("tradingsymbol") or "").strip()
    if not symbol:
        raise input_error("Missing or empty field `tradingsymbol`.")
    tag = form.get("tag") or None
    if tag is not None and (len(tag) > MAX_TAG or not _TAG.match(tag)):
        raise input_error(f"Invalid `tag`: at most {MAX_TAG} letters, digits or _-.: characters.")
    req = OrderRequest(
        variety=variety,
        exchange=_choice(form, "exchange", EXCHANGES),
        tradingsymbol=symbol,
        transaction_type=_choice(form, "transaction_type", TRANSACTION_TYPES),
        quantity=_integer(form, "quantity", required=True),
        product=_choice(form, "product", PRODUCTS),
        order_type=_choice(form, "order_type", ORDER_TYPES),
        price=_number(form, "price"),
        trigger_price=_number(form, "trigger_price"),
        validity=_choice(form, "validity", VALIDITIES, default="DAY"),
        disclosed_quantity=_integer(form, "disclosed_quantity", required=False),
        tag=tag,
    )
    check_prices(req.order_type, req.price, req.trigger_price, req.transaction_type)
    if req.quantity <= 0:
        raise input_error("Invalid `quantity`: must be greater than 0.")
    return req


def check_prices(order_type: str, price: float, trigger: float, side: str) -> None:
    """Price for LIMIT/SL, trigger for SL/SL-M, and a sane trigger/price relation for SL."""
    if order_type in ("LIMIT", "SL") and price <= 0:
        raise input_error("Invalid `price`: a price is required for LIMIT and SL orders.")
    if order_type in ("SL", "SL-M") and trigger <= 0:
        raise input_error("Invalid `trigger_price`: a trigger price is required for SL and SL-M orders.")
    if order_type == "SL" and side == "BUY" and trigger > price:
        raise input_error("Trigger price for stoploss buy orders should be less than the price.")
    if order_type == "SL" and side == "SELL" and trigger < price:
        raise input_error("Trigger price for stoploss sell orders should be higher than the price.")


def check_instrument(quantity: int, price: float, trigger: float, lot: int, tick: float,
                     tradable: bool) -> None:
    """Lot multiple and tick-size rules of the instrument."""
    if not tradable:
        raise order_error("This instrument is not tradable (indices cannot be ordered).")
    if lot > 1 and quantity % lot:
        raise input_error(f"Quantity should be a multiple of the lot size ({lot}).")
    for name, value in (("price", price), ("trigger_price", trigger)):
        if value and tick > 0 and not _on_grid(value, tick):
            raise input_error(f"Tick size for this script is {tick:g}. Kindly enter the `{name}` "
                              "in multiples of the tick size.")


def _on_grid(value: float, tick: float) -> bool:
    steps = value / tick
    return abs(steps - round(steps)) < 1e-6


@dataclass(frozen=True)
class ModifyRequest:
    quantity: int | None
    price: float | None
    trigger_price: float | None
    order_type: str | None
    validity: str | None
    disclosed_quantity: int | None


def parse_modify(variety: str, form: dict[str, str]) -> ModifyRequest:
    if variety not in VARIETIES:
        raise input_error(f"Invalid `variety`. Allowed: {', '.join(VARIETIES)}.")

    def present(name: str) -> bool:
        return bool((form.get(name) or "").strip())

    return ModifyRequest(
        quantity=_integer(form, "quantity", True) if present("quantity") else None,
        price=_number(form, "price") if present("price") else None,
        trigger_price=_number(form, "trigger_price") if present("trigger_price") else None,
        order_type=_choice(form, "order_type", ORDER_TYPES) if present("order_type") else None,
        validity=_choice(form, "validity", VALIDITIES) if present("validity") else None,
        disclosed_quantity=_integer(form, "disclosed_quantity", False) if present("disclosed_quantity") else None,
    )
