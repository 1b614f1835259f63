"""Margin calculation: `POST /margins/orders` and `POST /margins/basket` in Kite's shapes.

The model (plausible, not Zerodha's RMS):
- Option buy: the premium, price × quantity (`option_premium`), nothing else.
- Option sell and futures (either side): `span` is the worst loss over a price scan of the
  underlying, ±9% for indices and ±15% for stocks in seven steps, every leg repriced with the
  stand-in's own model; `exposure` is 2% (index) or 3.5% (stock) of the notional (the underlying
  × quantity for options, the futures price × quantity for futures).
- Equity: `var` = the order value for CNC; MIS is 5× leveraged (20% of the value, `leverage` 5).
- A basket's `initial` is the sum of its orders taken alone; its `final` scans the orders of each
  underlying together (SPAN style: scan loss less the net value of the options, floored at 0),
  with `option_premium` the net premium (paid minus received) and `exposure` on each instrument's
  net quantity. With `consider_positions` the account's open positions join the scan and `final`
  is what the basket adds to their margin (negative when it releases margin).
- `POST /margins/orders` takes existing positions into account: the part of an order that closes
  an open position of the same product needs no margin.
- Prices: the order's `price` for LIMIT/SL orders, the last price otherwise. `mode=compact`
  leaves only `total` (other amounts zero), as Kite does. Charges are in charges.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ticker.infra.kitesim.charges import (
    add_charges,
    breakdown,
    instrument_row,
    number_of,
    orders_body,
    segment_of,
    text_of,
    zero_charges,
)
from ticker.infra.kitesim.envelopes import input_error
from ticker.infra.kitesim.market import Market, model_prices
from ticker.infra.kitesim.order_book import OrderBook
from ticker.infra.kitesim.order_rules import ORDER_TYPES, PRODUCTS, TRANSACTION_TYPES, VARIETIES
from ticker.infra.kitesim.universe import KIND_CE, KIND_FUT, KIND_PE, KIND_UNDERLYING

SCAN_INDEX, SCAN_STOCK = 0.09, 0.15
ELM_INDEX, ELM_STOCK = 0.02, 0.035
MIS_EQUITY_LEVERAGE = 5
_STEPS = np.linspace(-1.0, 1.0, 7)


@dataclass(frozen=True)
class Leg:
    """One order (or open position) for the margin model."""

    row: int
    exchange: str
    tradingsymbol: str
    side: str
    product: str
    quantity: int
    price: float

    @property
    def signed(self) -> int:
        return self.quantity if self.side == "BUY" else -self.quantity


def parse_legs(market: Market, body: Any, now: float) -> list[Leg]:
    legs = []
    for o in orders_body(body):
        row = instrument_row(market.uni, o)
        if market.uni.is_index_row[row]:
            raise input_error("Indices cannot be traded, so they take no margin.")
        side = text_of(o, "transaction_type", TRANSACTION_TYPES)
        text_of(o, "variety", VARIETIES)
        product = text_of(o, "product", PRODUCTS)
        order_type = text_of(o, "order_type", ORDER_TYPES)
        quantity = number_of(o, "quantity", required=True)
        if quantity <= 0 or not quantity.is_integer():
            raise input_error("Invalid `quantity`: must be a whole number greater than 0.")
        price = number_of(o, "price")
        if order_type in ("MARKET", "SL-M") or price <= 0:
            price = float(market.price_rows(np.array([row]), now)[0])
        legs.append(Leg(row, o["exchange"], o["tradingsymbol"], side, product, int(quantity), price))
    return legs


class MarginModel:
    def __init__(self, market: Market, orders: OrderBook) -> None:
        self.market, self.uni, self.orders = market, market.uni, orders

    # --- endpoints ------------------------------------------------------------------------------
    def order_margins(self, api_key: str, legs: list[Leg], now: float, compact: bool) -> list[dict]:
        out = []
        for leg in legs:
            opening = leg.quantity - self._closing(api_key, leg)
            m = self._alone(leg, opening, now)
            m["charges"] = breakdown(segment_of(self.uni, leg.row, leg.product), leg.side,
                                     leg.price * leg.quantity)
            out.append(_compact(m) if compact else m)
        return out

    def basket(self, api_key: str, legs: list[Leg], now: float, consider_positions: bool,
               compact: bool) -> dict:
        orders = []
        initial, charges = _empty(), zero_charges()
        for leg in legs:
            m = self._alone(leg, leg.quantity, now)
            m["charges"] = breakdown(segment_of(self.uni, leg.row, leg.product), leg.side,
                                     leg.price * leg.quantity)
            add_charges(charges, m["charges"])
            for key in ("span", "exposure", "option_premium", "var", "total"):
                initial[key] += m[key]
            orders.append(m)
        held = self._positions(api_key) if consider_positions else []
        final = self._together(held + legs, now)
        if held:
            before = self._together(held, now)
            for key in ("span", "exposure", "total"):
                final[key] -= before[key]
            final["option_premium"] -= before["option_premium"]
        if compact:
            initial, final, orders = _compact(initial), _compact(final), [_compact(m) for m in orders]
            charges = zero_charges()
        return {"initial": initial, "final": final, "orders": orders, "charges": charges}

    # --- the model ------------------------------------------------------------------------------
    def _alone(self, leg: Leg, quantity: int, now: float) -> dict:
        m = {**_empty(), "type": "equity", "tradingsymbol": leg.tradingsymbol, "exchange": leg.exchange,
             "leverage": 1}
        kind = int(self.uni.kind[leg.row])
        if kind == KIND_UNDERLYING:
            value = leg.price * quantity
            mis = leg.product == "MIS"
            m["var"] = value / MIS_EQUITY_LEVERAGE if mis else value
            m["leverage"] = MIS_EQUITY_LEVERAGE if mis else 1
        elif kind in (KIND_CE, KIND_PE) and leg.side == "BUY":
            m["option_premium"] = leg.price * quantity
        elif quantity:
            sized = Leg(leg.row, leg.exchange, leg.tradingsymbol, leg.side, leg.product, quantity, leg.price)
            m["span"] = self._scan_loss([sized], now)
            m["exposure"] = self._exposure(sized)
        m["total"] = m["span"] + m["exposure"] + m["option_premium"] + m["var"]
        return m

    def _together(self, legs: list[Leg], now: float) -> dict:
        """The `final` margin of legs taken as one portfolio, scanned per underlying."""
        m = _empty()
        for und in sorted({int(self.uni.und[leg.row]) for leg in legs}):
            group = [leg for leg in legs if self.uni.und[leg.row] == und]
            derivs = [leg for leg in group if self.uni.kind[leg.row] != KIND_UNDERLYING]
            options = [leg for leg in derivs if self.uni.kind[leg.row] in (KIND_CE, KIND_PE)]
            net_option_value = sum(leg.signed * leg.price for leg in options)
            if derivs:
                m["span"] += max(0.0, self._scan_loss(derivs, now) - net_option_value)
            m["option_premium"] += net_option_value
            m["exposure"] += sum(self._exposure(leg) for leg in _netted(derivs))
            m["var"] += sum(self._alone(leg, leg.quantity, now)["var"] for leg in group
                            if self.uni.kind[leg.row] == KIND_UNDERLYING)
        m["total"] = m["span"] + m["exposure"] + m["option_premium"] + m["var"]
        return m

    def _scan_loss(self, legs: list[Leg], now: float) -> float:
        """Worst loss of the legs (one underlying) over the price scan, from today's model value."""
        und = int(self.uni.und[legs[0].row])
        spot = float(self.market.spots[und])
        scan = SCAN_INDEX if self.uni.underlyings[und].is_index else SCAN_STOCK
        spots = spot * (1.0 + scan * _STEPS)
        rows = np.array([leg.row for leg in legs], dtype=np.int64)
        qty = np.array([leg.signed for leg in legs], dtype=float)
        grid_rows = np.repeat(rows[None, :], len(spots), axis=0).ravel()
        grid_spots = np.repeat(spots, len(rows))
        values = model_prices(self.uni, grid_rows, grid_spots, now, self.market.rate, rounded=False)
        values = values.reshape(len(spots), len(rows))
        base = model_prices(self.uni, rows, np.full(len(rows), spot), now, self.market.rate, rounded=False)
        pnl = (values - base) @ qty
        return float(max(0.0, -pnl.min()))

    def _exposure(self, leg: Leg) -> float:
        kind = int(self.uni.kind[leg.row])
        if kind in (KIND_CE, KIND_PE) and leg.side == "BUY":
            return 0.0
        und = int(self.uni.und[leg.row])
        pct = ELM_INDEX if self.uni.underlyings[und].is_index else ELM_STOCK
        base = leg.price if kind == KIND_FUT else float(self.market.spots[und])
        return pct * base * leg.quantity

    # --- positions ------------------------------------------------------------------------------
    def _net(self, api_key: str, row: int, product: str) -> int:
        pos = self.orders.positions.get((api_key, row, product))
        return 0 if pos is None else pos.buy_quantity - pos.sell_quantity

    def _closing(self, api_key: str, leg: Leg) -> int:
        """How much of the order closes an open position of the same product."""
        net = self._net(api_key, leg.row, leg.product)
        against = -net if leg.side == "BUY" else net
        return min(leg.quantity, max(0, against))

    def _positions(self, api_key: str) -> list[Leg]:
        legs = []
        for (key, row, product), pos in self.orders.positions.items():
            net = pos.buy_quantity - pos.sell_quantity
            if key != api_key or net == 0:
                continue
            price = float(self.market.price_rows(np.array([row]))[0])
            legs.append(Leg(row, self.uni.exchange_of(row), str(self.uni.symbol[row]),
                            "BUY" if net > 0 else "SELL", product, abs(net), price))
        return legs


def _netted(legs: list[Leg]) -> list[Leg]:
    """Legs of the same instrument offset each other: one leg per instrument, its net quantity."""
    out = []
    for row in dict.fromkeys(leg.row for leg in legs):
        same = [leg for leg in legs if leg.row == row]
        net = sum(leg.signed for leg in same)
        if net:
            first = same[0]
            out.append(Leg(row, first.exchange, first.tradingsymbol, "BUY" if net > 0 else "SELL",
                           first.product, abs(net), sum(leg.price for leg in same) / len(same)))
    return out


def _empty() -> dict:
    return {"type": "", "tradingsymbol": "", "exchange": "", "span": 0.0, "exposure": 0.0,
            "option_premium": 0.0, "additional": 0, "bo": 0, "cash": 0, "var": 0.0,
            "pnl": {"realised": 0, "unrealised": 0}, "leverage": 0, "charges": zero_charges(),
            "total": 0.0}


def _compact(m: dict) -> dict:
    """Only the total, as `mode=compact` answers."""
    return {**_empty(), "type": m["type"], "tradingsymbol": m["tradingsymbol"],
            "exchange": m["exchange"], "total": m["total"]}
