"""Zerodha's charges on an order, broken down as Kite's margin and contract-note APIs report them
(`transaction_tax`, `exchange_turnover_charge`, `sebi_turnover_charge`, `brokerage`, `stamp_duty`,
`gst`, `total`), and the body of `POST /charges/orders` (the virtual contract note).

Rates, NSE, as Zerodha's charge list (zerodha.com/charges) publishes them for 2026, with STT as the
Union Budget 2026 raised it from 1 April 2026 (futures 0.02% -> 0.05%, options 0.1% -> 0.15%):

    segment           brokerage                 STT                      exchange    stamp duty
    equity delivery   0                         0.1% on buy and sell     0.00307%    0.015% on buy
    equity intraday   0.03% or ₹20, lower       0.025% on sell           0.00307%    0.003% on buy
    futures           0.03% or ₹20, lower       0.05% on sell            0.00183%    0.002% on buy
    options           flat ₹20                  0.15% of premium, sell   0.03553%    0.003% on buy

SEBI turnover fee ₹10 per crore everywhere; GST 18% on brokerage + exchange charge + SEBI fee,
reported whole as IGST as Kite does. Turnover is price × quantity (premium for options). Amounts
are left unrounded, as Kite leaves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ticker.infra.kitesim.envelopes import input_error
from ticker.infra.kitesim.order_rules import ORDER_TYPES, PRODUCTS, TRANSACTION_TYPES, VARIETIES
from ticker.infra.kitesim.universe import KIND_CE, KIND_FUT, KIND_PE, KIND_UNDERLYING, Universe

SEBI_FEE = 10 / 1e7
GST = 0.18
MAX_ORDERS = 200


@dataclass(frozen=True)
class Rates:
    brokerage_pct: float | None  # None: a flat fee
    brokerage_cap: float
    stt_buy: float
    stt_sell: float
    exchange: float
    stamp_buy: float


RATES = {
    "delivery": Rates(0.0, 0.0, 0.001, 0.001, 0.0000307, 0.00015),
    "intraday": Rates(0.0003, 20.0, 0.0, 0.00025, 0.0000307, 0.00003),
    "futures": Rates(0.0003, 20.0, 0.0, 0.0005, 0.0000183, 0.00002),
    "options": Rates(None, 20.0, 0.0, 0.0015, 0.0003553, 0.00003),
}


def segment_of(uni: Universe, row: int, product: str) -> str:
    kind = int(uni.kind[row])
    if kind == KIND_FUT:
        return "futures"
    if kind in (KIND_CE, KIND_PE):
        return "options"
    return "delivery" if kind == KIND_UNDERLYING and product == "CNC" else "intraday"


def breakdown(segment: str, side: str, turnover: float) -> dict:
    """Kite's `charges` object for one order of `turnover` rupees."""
    r = RATES[segment]
    buy = side == "BUY"
    brokerage = r.brokerage_cap if r.brokerage_pct is None else min(turnover * r.brokerage_pct,
                                                                      r.brokerage_cap)
    stt = turnover * (r.stt_buy if buy else r.stt_sell)
    exchange = turnover * r.exchange
    sebi = turnover * SEBI_FEE
    stamp = turnover * r.stamp_buy if buy else 0.0
    gst = (brokerage + exchange + sebi) * GST
    return {
        "transaction_tax": stt, "transaction_tax_type": "stt", "exchange_turnover_charge": exchange,
        "sebi_turnover_charge": sebi, "brokerage": brokerage, "stamp_duty": stamp,
        "gst": {"igst": gst, "cgst": 0, "sgst": 0, "total": gst},
        "total": stt + exchange + sebi + brokerage + stamp + gst,
    }


def zero_charges(tax_type: str = "") -> dict:
    return {"transaction_tax": 0, "transaction_tax_type": tax_type, "exchange_turnover_charge": 0,
            "sebi_turnover_charge": 0, "brokerage": 0, "stamp_duty": 0,
            "gst": {"igst": 0, "cgst": 0, "sgst": 0, "total": 0}, "total": 0}


def add_charges(total: dict, one: dict) -> None:
    """Accumulate one `charges` object into another (in place)."""
    for key in ("transaction_tax", "exchange_turnover_charge", "sebi_turnover_charge", "brokerage",
                "stamp_duty", "total"):
        total[key] += one[key]
    for key in ("igst", "cgst", "sgst", "total"):
        total["gst"][key] += one["gst"][key]


# --- request fields shared with the margin APIs ---------------------------------------------------
def orders_body(body: Any) -> list[dict]:
    if not isinstance(body, list) or not body or not all(isinstance(o, dict) for o in body):
        raise input_error("The request body must be a non-empty JSON array of orders.")
    if len(body) > MAX_ORDERS:
        raise input_error(f"Too many orders: at most {MAX_ORDERS} per request.")
    return body


def text_of(o: dict, name: str, allowed: tuple[str, ...] | None = None) -> str:
    value = o.get(name)
    if not isinstance(value, str) or not value.strip():
        raise input_error(f"Missing or empty field `{name}`.")
    if allowed is not None and value not in allowed:
        raise input_error(f"Invalid `{name}`. Allowed: {', '.join(allowed)}.")
    return value


def number_of(o: dict, name: str, required: bool = False) -> float:
    value = o.get(name)
    if value is None or value == "":
        if required:
            raise input_error(f"Missing or empty field `{name}`.")
        return 0.0
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise input_error(f"Invalid `{name}`: must be a number.") from None
    if isinstance(value, bool) or not math.isfinite(out) or out < 0:
        raise input_error(f"Invalid `{name}`: must be a non-negative number.")
    return out


def instrument_row(uni: Universe, o: dict) -> int:
    row = uni.row_of_symbol.get((text_of(o, "exchange"), text_of(o, "tradingsymbol")))
    if row is None:
        raise input_error(f"The instrument {o['exchange']}:{o['tradingsymbol']} has either expired "
                          "or does not exist.")
    return row


def contract_note(uni: Universe, body: Any) -> list[dict]:
    """`POST /charges/orders`: each executed order with the charges it incurs."""
    out = []
    for o in orders_body(body):
        row = instrument_row(uni, o)
        side = text_of(o, "transaction_type", TRANSACTION_TYPES)
        product = text_of(o, "product", PRODUCTS)
        quantity = number_of(o, "quantity", required=True)
        price = number_of(o, "average_price", required=True)
        if quantity <= 0 or not quantity.is_integer():
            raise input_error("Invalid `quantity`: must be a whole number greater than 0.")
        out.append({
            "transaction_type": side, "tradingsymbol": o["tradingsymbol"], "exchange": o["exchange"],
            "variety": text_of(o, "variety", VARIETIES), "product": product,
            "order_type": text_of(o, "order_type", ORDER_TYPES), "quantity": int(quantity), "price": price,
            "charges": breakdown(segment_of(uni, row, product), side, price * quantity),
        })
    return out
