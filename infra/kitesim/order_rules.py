"""Kite's order validations: what a place/modify request must carry, checked before anything happens.

Messages follow Kite's wording where known; the `error_type` (InputException / OrderException) is
what clients act on. The 2026 rules (SEBI's retail-algo framework, in force from 1 April 2026):

- MARKET and SL-M orders carry `market_protection`: -1 (automatic) or a percentage from 1 to 100;
  missing or 0 is refused. Modifying an order into MARKET/SL-M needs it too; an order that already
  is one keeps its own.
- quantity is a multiple of the lot size and at most the contract's freeze quantity, unless
  `autoslice=true`: then the order is split into slices of at most the freeze quantity (at most
  `MAX_SLICES` of them); autoslice on an order that needs no slicing is refused, as Kite does.
- `co` needs `trigger_price`; `iceberg` needs `iceberg_legs` (2..10) and `iceberg_quantity` (each
  leg within the freeze quantity); `validity=TTL` needs `validity_ttl` (minutes).
- modify/cancel name the order's own variety.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ticker.core.contract_specs import max_order_quantity
from ticker.infra.kitesim.envelopes import input_error, order_error

VARIETIES = ("regular", "amo", "co", "iceberg", "auction")
EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX")
TRANSACTION_TYPES = ("BUY", "SELL")
ORDER_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
PRODUCTS = ("CNC", "NRML", "MIS", "MTF")
VALIDITIES = ("DAY", "IOC", "TTL")
MAX_TAG = 20
MAX_MODIFICATIONS = 25
MARKET_TYPES = ("MARKET", "SL-M")   # need market protection
AUTO_PROTECTION = -1.0
MIN_ICEBERG_LEGS, MAX_ICEBERG_LEGS = 2, 10
MAX_SLICES = 10
NO_PROTECTION = ("Market orders without market protection are not allowed via API. Please set market "
                 "protection or use a Limit order.")
_TAG = re.compile(r"^[A-Za-z0-9_\-.:]*$")


@dataclass(frozen=True)
class PlaceForm:
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
    market_protection: float = 0.0
    validity_ttl: int = 0
    iceberg_legs: int = 0
    iceberg_quantity: int = 0
    autoslice: bool = False


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


def parse_place(variety: str, form: dict[str, str]) -> PlaceForm:
    """Field-level checks of a new order (instrument checks come after, in `check_instrument`)."""
    if variety not in VARIETIES:
        raise input_error(f"Invalid `variety`. Allowed: {', '.join(VARIETIES)}.")
    symbol = (form.get("tradingsymbol") or "").strip()
    if not symbol:
        raise input_error("Missing or empty field `tradingsymbol`.")
    tag = form.get("tag") or None
    if tag is not None and (len(tag) > MAX_TAG or not _TAG.match(tag)):
        raise input_error(f"Invalid `tag`: at most {MAX_TAG} letters, digits or _-.: characters.")
    req = PlaceForm(
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
        market_protection=parse_protection(form) or 0.0,
        validity_ttl=_integer(form, "validity_ttl", required=False),
        iceberg_legs=_integer(form, "iceberg_legs", required=False),
        iceberg_quantity=_integer(form, "iceberg_quantity", required=False),
        autoslice=_flag(form, "autoslice"),
    )
    check_prices(req.order_type, req.price, req.trigger_price, req.transaction_type)
    if req.quantity <= 0:
        raise input_error("Invalid `quantity`: must be greater than 0.")
    if req.order_type in MARKET_TYPES and not req.market_protection:
        raise input_error(NO_PROTECTION)
    _check_variety_fields(req)
    return req


def parse_protection(form: dict[str, str]) -> float | None:
    """`market_protection`: None when absent; -1 or 1..100 when given; anything else is refused.
    0 is what an order without protection carries (refused later for MARKET/SL-M)."""
    raw = (form.get("market_protection") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise input_error(f"Invalid `market_protection`: {raw!r} is not a number.") from None
    if value == 0 or value == AUTO_PROTECTION or (math.isfinite(value) and 1 <= value <= 100):
        return value
    raise input_error("Invalid `market_protection`: use -1 for automatic protection or a percentage "
                      "from 1 to 100.")


def _flag(form: dict[str, str], name: str) -> bool:
    raw = (form.get(name) or "").strip().lower()
    if raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise input_error(f"Invalid `{name}`: use true or false.")


def _check_variety_fields(req: PlaceForm) -> None:
    if req.variety == "co" and req.trigger_price <= 0:
        raise input_error("Invalid `trigger_price`: a stoploss trigger price is required for cover orders.")
    if req.variety == "iceberg":
        if not MIN_ICEBERG_LEGS <= req.iceberg_legs <= MAX_ICEBERG_LEGS:
            raise input_error(f"Invalid `iceberg_legs`: iceberg orders need {MIN_ICEBERG_LEGS} to "
                              f"{MAX_ICEBERG_LEGS} legs.")
        if req.iceberg_quantity <= 0:
            raise input_error("Missing or empty field `iceberg_quantity`: required for iceberg orders.")
        if req.iceberg_quantity > req.quantity:
            raise input_error("Invalid `iceberg_quantity`: cannot exceed the order quantity.")
    if req.validity == "TTL" and req.validity_ttl <= 0:
        raise input_error("Missing or empty field `validity_ttl`: TTL orders need their validity in minutes.")


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
    check_lot(quantity, lot)
    for name, value in (("price", price), ("trigger_price", trigger)):
        if value and tick > 0 and not _on_grid(value, tick):
            raise input_error(f"Tick size for this script is {tick:g}. Kindly enter the `{name}` "
                              "in multiples of the tick size.")


def check_lot(quantity: int, lot: int, name: str = "quantity") -> None:
    if lot > 1 and quantity % lot:
        if name == "quantity":
            raise input_error(f"Quantity should be a multiple of the lot size ({lot}).")
        raise input_error(f"Invalid `{name}`: should be a multiple of the lot size ({lot}).")


def slice_sizes(req: PlaceForm, lot: int, freeze: int) -> list[int]:
    """The quantities the order is placed as: itself, or its autoslices. Freeze rules:
    one order carries at most `freeze` units (0 = no limit); iceberg legs are each within it."""
    if req.variety == "iceberg":
        check_lot(req.iceberg_quantity, lot, "iceberg_quantity")
        if freeze and req.iceberg_quantity > freeze:
            raise input_error(f"Invalid `iceberg_quantity`: each leg can be at most the freeze quantity "
                              f"({freeze}).")
        return [req.quantity]
    if not freeze:
        if req.autoslice:
            raise input_error("Order slicing is not available for this instrument: it has no freeze limit.")
        return [req.quantity]
    if req.quantity <= freeze:
        if req.autoslice:  # Kite slices only what needs slicing
            smallest = max_order_quantity(freeze, lot) + max(lot, 1)
            raise input_error(f"Quantity should be greater than or equal to {smallest} for order slicing.")
        return [req.quantity]
    if not req.autoslice:
        raise input_error(f"Quantity exceeds the freeze limit of {freeze} for this instrument. Place a "
                          "smaller order or use autoslice.")
    size = max_order_quantity(freeze, lot)
    full, rest = divmod(req.quantity, size)
    slices = [size] * full + ([rest] if rest else [])
    if len(slices) > MAX_SLICES:
        raise input_error(f"Quantity too large to slice: at most {MAX_SLICES} slices of {size} "
                          f"({MAX_SLICES * size}) per order.")
    return slices


def _on_grid(value: float, tick: float) -> bool:
    steps = value / tick
    return abs(steps - round(steps)) < 1e-6


@dataclass(frozen=True)
class ModifyForm:
    quantity: int | None
    price: float | None
    trigger_price: float | None
    order_type: str | None
    validity: str | None
    disclosed_quantity: int | None
    market_protection: float | None = None


def parse_modify(variety: str, form: dict[str, str]) -> ModifyForm:
    if variety not in VARIETIES:
        raise input_error(f"Invalid `variety`. Allowed: {', '.join(VARIETIES)}.")

    def present(name: str) -> bool:
        return bool((form.get(name) or "").strip())

    return ModifyForm(
        quantity=_integer(form, "quantity", True) if present("quantity") else None,
        price=_number(form, "price") if present("price") else None,
        trigger_price=_number(form, "trigger_price") if present("trigger_price") else None,
        order_type=_choice(form, "order_type", ORDER_TYPES) if present("order_type") else None,
        validity=_choice(form, "validity", VALIDITIES) if present("validity") else None,
        disclosed_quantity=_integer(form, "disclosed_quantity", False) if present("disclosed_quantity") else None,
        market_protection=parse_protection(form),
    )
