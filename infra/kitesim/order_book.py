"""The order book: placement, modification, cancellation, matching against the model price,
trades and positions, with a postback on every state change.

MARKET orders fill at once at the current model price (within any market protection, which the
model price always is); LIMIT orders rest until the price crosses them; SL/SL-M orders wait in
TRIGGER PENDING until the trigger is crossed. An autoslice request becomes one order per slice,
each tagged `autoslice` and `autoslice:<parent id>`. Memory is bounded by `max_orders` per account
(Kite's daily order cap is a rate limit, see limits.py; this bound only keeps memory finite).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from ticker.core.clock import IST
from ticker.infra.kitesim.envelopes import KiteError, input_error, order_error
from ticker.infra.kitesim.market import Market
from ticker.infra.kitesim.order_rules import (
    MARKET_TYPES,
    MAX_MODIFICATIONS,
    NO_PROTECTION,
    ModifyForm,
    PlaceForm,
    check_instrument,
    check_prices,
    slice_sizes,
)

OPEN_STATES = ("OPEN", "TRIGGER PENDING", "AMO REQ RECEIVED")
Notify = Callable[[str, dict], None]


def kite_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, IST).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class SimOrder:
    order_id: str
    api_key: str
    user_id: str
    row: int
    token: int
    req: PlaceForm
    placed_at: float
    status: str = "OPEN"
    status_message: str | None = None
    price: float = 0.0
    trigger_price: float = 0.0
    quantity: int = 0
    order_type: str = "MARKET"
    validity: str = "DAY"
    filled_quantity: int = 0
    cancelled_quantity: int = 0
    average_price: float = 0.0
    updated_at: float = 0.0
    modifications: int = 0
    market_protection: float = 0.0
    extra_tags: tuple[str, ...] = ()
    history: list[dict] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES

    def as_kite(self) -> dict:
        """The order as GET /orders lists it."""
        r = self.req
        return {
            "placed_by": self.user_id, "order_id": self.order_id,
            "exchange_order_id": None if self.status == "REJECTED" else f"11{self.order_id[-16:]}",
            "parent_order_id": None, "status": self.status, "status_message": self.status_message,
            "status_message_raw": self.status_message, "order_timestamp": kite_time(self.placed_at),
            "exchange_update_timestamp": kite_time(self.updated_at),
            "exchange_timestamp": kite_time(self.updated_at), "variety": r.variety,
            "modified": self.modifications > 0, "exchange": r.exchange, "tradingsymbol": r.tradingsymbol,
            "instrument_token": self.token, "order_type": self.order_type,
            "transaction_type": r.transaction_type, "validity": self.validity,
            "validity_ttl": r.validity_ttl if self.validity == "TTL" else 0,
            "product": r.product, "quantity": self.quantity, "disclosed_quantity": r.disclosed_quantity,
            "price": self.price, "trigger_price": self.trigger_price, "average_price": self.average_price,
            "filled_quantity": self.filled_quantity,
            "pending_quantity": self.quantity - self.filled_quantity - self.cancelled_quantity
            if self.is_open else 0,
            "cancelled_quantity": self.cancelled_quantity, "market_protection": _number(self.market_protection),
            "meta": {}, "tag": r.tag, "tags": ([r.tag] if r.tag else []) + list(self.extra_tags),
            "guid": f"sim{self.order_id}",
        }


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


@dataclass
class BookPosition:
    buy_quantity: int = 0
    sell_quantity: int = 0
    buy_value: float = 0.0
    sell_value: float = 0.0


class OrderBook:
    def __init__(self, market: Market, notify: Notify, max_orders: int = 50_000) -> None:
        self.market = market
        self.uni = market.uni
        self.notify = notify
        self.max_orders = max_orders
        self.orders: dict[str, SimOrder] = {}
        self.resting: dict[str, SimOrder] = {}  # the open subset, so matching stays cheap
        self.by_account: dict[str, list[str]] = {}
        self.trades: dict[str, list[dict]] = {}
        self.positions: dict[tuple[str, int, str], BookPosition] = {}
        self._seq = 0
        self._day = datetime.now(IST).strftime("%y%m%d")

    def reset(self) -> None:
        self.orders.clear()
        self.resting.clear()
        self.by_account.clear()
        self.trades.clear()
        self.positions.clear()

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self._day}{self._seq:09d}"

    # --- commands --------------------------------------------------------------------------------
    def submit(self, api_key: str, user_id: str, req: PlaceForm,
               now: float | None = None) -> tuple[dict, list[SimOrder]]:
        """POST /orders/{variety}: (the response's data, the orders created). An autoslice request
        answers with the parent id and one child per slice (its order_id, or the error it met)."""
        now = time.time() if now is None else now
        row = self._admissible(req, now)
        slices = slice_sizes(req, int(self.uni.lot[row]), int(self.uni.freeze[row]))
        if not req.autoslice:
            order = self._create(api_key, user_id, req, row, now)
            return {"order_id": order.order_id}, [order]
        parent = self._next_id()
        tags = ("autoslice", f"autoslice:{parent}")
        children: list[dict] = []
        created: list[SimOrder] = []
        for quantity in slices:
            try:
                child = self._create(api_key, user_id, replace(req, quantity=quantity), row, now, tags)
            except KiteError as err:
                children.append({"error": {"code": err.status, "error_type": err.error_type,
                                           "message": err.message, "data": None}})
                continue
            created.append(child)
            children.append({"order_id": child.order_id})
        return {"order_id": parent, "children": children}, created

    def place(self, api_key: str, user_id: str, req: PlaceForm, now: float | None = None) -> SimOrder:
        """One order (no autoslicing), as `submit` places it."""
        now = time.time() if now is None else now
        row = self._admissible(req, now)
        slice_sizes(replace(req, autoslice=False), int(self.uni.lot[row]), int(self.uni.freeze[row]))
        return self._create(api_key, user_id, req, row, now)

    def _admissible(self, req: PlaceForm, now: float) -> int:
        """The instrument's row once the instrument, lot, tick and session rules pass."""
        row = self.uni.row_of_symbol.get((req.exchange, req.tradingsymbol))
        if row is None:
            raise input_error("The instrument you are placing an order for has either expired or does not exist.")
        check_instrument(req.quantity, req.price, req.trigger_price, int(self.uni.lot[row]),
                         float(self.uni.tick[row]), not self.uni.is_index_row[row])
        if req.variety == "regular" and not self.market.is_open(now):
            raise input_error("Markets are closed right now. Use GTT for placing long standing orders instead.")
        return row

    def _create(self, api_key: str, user_id: str, req: PlaceForm, row: int, now: float,
                tags: tuple[str, ...] = ()) -> SimOrder:
        mine = self.by_account.setdefault(api_key, [])
        if len(mine) >= self.max_orders:
            raise order_error(f"Maximum allowed order requests exceeded ({self.max_orders} per day).")
        order = SimOrder(self._next_id(), api_key, user_id, row, int(self.uni.token[row]), req, now,
                         price=req.price, trigger_price=req.trigger_price, quantity=req.quantity,
                         order_type=req.order_type, validity=req.validity, updated_at=now,
                         market_protection=req.market_protection, extra_tags=tags)
        self.orders[order.order_id] = order
        mine.append(order.order_id)
        if req.product == "CNC" and req.exchange in ("NFO", "BFO"):
            self._set(order, "REJECTED", now, "Product type CNC is not allowed for F&O instruments.")
            return order
        if req.variety == "amo" and not self.market.is_open(now):
            self._set(order, "AMO REQ RECEIVED", now)  # waits for the open, then matches as usual
        else:
            self._set(order, "TRIGGER PENDING" if req.order_type in ("SL", "SL-M") else "OPEN", now)
            self._try_fill(order, now)
        return order

    def get(self, api_key: str, order_id: str, variety: str | None = None) -> SimOrder:
        """The account's order; with `variety`, it must be the order's own (as modify/cancel need)."""
        order = self.orders.get(order_id)
        if order is None or order.api_key != api_key:
            raise order_error("Couldn't find that `order_id`.", status=404)
        if variety is not None and variety != order.req.variety:
            raise input_error(f"Invalid `variety`: order {order_id} is a `{order.req.variety}` order, "
                              f"not `{variety}`.")
        return order

    def modify(self, api_key: str, order_id: str, m: ModifyForm, now: float | None = None,
               variety: str | None = None) -> SimOrder:
        now = time.time() if now is None else now
        order = self.get(api_key, order_id, variety)
        if not order.is_open:
            raise order_error(f"Order cannot be modified as it is in {order.status} state.")
        if order.modifications >= MAX_MODIFICATIONS:
            raise order_error("Maximum allowed order modifications exceeded.")
        order_type = m.order_type or order.order_type
        price = order.price if m.price is None else m.price
        trigger = order.trigger_price if m.trigger_price is None else m.trigger_price
        quantity = order.quantity if m.quantity is None else m.quantity
        check_prices(order_type, price, trigger, order.req.transaction_type)
        protection = self._protection_after(order, order_type, m.market_protection)
        if quantity <= order.filled_quantity:
            raise input_error("Invalid `quantity`: must exceed the filled quantity.")
        check_instrument(quantity, price, trigger, int(self.uni.lot[order.row]),
                         float(self.uni.tick[order.row]), True)
        freeze = int(self.uni.freeze[order.row])
        if freeze and quantity > freeze and order.req.variety != "iceberg":
            raise input_error(f"Quantity exceeds the freeze limit of {freeze} for this instrument.")
        order.order_type, order.price, order.trigger_price, order.quantity = order_type, price, trigger, quantity
        order.market_protection = protection
        order.validity = m.validity or order.validity
        order.modifications += 1
        self._set(order, "UPDATE", now)
        self._set(order, "TRIGGER PENDING" if order_type in ("SL", "SL-M") else "OPEN", now, notify=False)
        self._try_fill(order, now)
        return order

    @staticmethod
    def _protection_after(order: SimOrder, order_type: str, given: float | None) -> float:
        """Market protection once modified: a MARKET/SL-M order keeps its own unless a new one is
        given; turning a LIMIT/SL order into MARKET/SL-M needs one."""
        if order_type not in MARKET_TYPES:
            return order.market_protection if given is None else given
        if given:
            return given
        if order.order_type in MARKET_TYPES and order.market_protection and given is None:
            return order.market_protection
        raise input_error(NO_PROTECTION)

    def cancel(self, api_key: str, order_id: str, now: float | None = None,
               variety: str | None = None) -> SimOrder:
        now = time.time() if now is None else now
        order = self.get(api_key, order_id, variety)
        if not order.is_open:
            raise order_error(f"Order cannot be cancelled as it is in {order.status} state.")
        order.cancelled_quantity = order.quantity - order.filled_quantity
        self._set(order, "CANCELLED", now, "Cancelled by user.")
        return order

    # --- matching --------------------------------------------------------------------------------
    def match(self, now: float) -> int:
        """Fill or trigger every resting order the current price crosses; returns fills."""
        resting = list(self.resting.values())
        if not resting:
            return 0
        prices = self.market.price_rows(np.array([o.row for o in resting]), now)
        return sum(self._try_fill(o, now, float(p)) for o, p in zip(resting, prices, strict=True))

    def _try_fill(self, order: SimOrder, now: float, ltp: float | None = None) -> bool:
        if order.status == "AMO REQ RECEIVED":
            if not self.market.is_open(now):
                return False
            self._set(order, "TRIGGER PENDING" if order.order_type in ("SL", "SL-M") else "OPEN", now)
        if ltp is None:
            ltp = float(self.market.price_rows(np.array([order.row]), now)[0])
        buy = order.req.transaction_type == "BUY"
        if order.status == "TRIGGER PENDING":
            if (buy and ltp < order.trigger_price) or (not buy and ltp > order.trigger_price):
                return False
            order.order_type = "MARKET" if order.order_type == "SL-M" else "LIMIT"
            self._set(order, "OPEN", now)
        if order.order_type == "LIMIT":
            crossed = ltp <= order.price if buy else ltp >= order.price
            if not crossed:
                if order.validity == "IOC":
                    order.cancelled_quantity = order.quantity - order.filled_quantity
                    self._set(order, "CANCELLED", now, "IOC order cancelled: not matched.")
                return False
        if not self.market.is_open(now):
            return False
        self._fill(order, ltp, now)
        return True

    def _fill(self, order: SimOrder, price: float, now: float) -> None:
        qty = order.quantity - order.filled_quantity
        order.average_price = price
        order.filled_quantity = order.quantity
        r = order.req
        key = (order.api_key, order.row, r.product)
        pos = self.positions.setdefault(key, BookPosition())
        if r.transaction_type == "BUY":
            pos.buy_quantity += qty
            pos.buy_value += qty * price
        else:
            pos.sell_quantity += qty
            pos.sell_value += qty * price
        trades = self.trades.setdefault(order.api_key, [])
        trades.append({
            "trade_id": f"{len(trades) + 1:08d}", "order_id": order.order_id,
            "exchange": r.exchange, "tradingsymbol": r.tradingsymbol, "instrument_token": order.token,
            "product": r.product, "average_price": price, "quantity": qty,
            "exchange_order_id": f"11{order.order_id[-16:]}", "transaction_type": r.transaction_type,
            "fill_timestamp": kite_time(now), "order_timestamp": kite_time(order.placed_at)[-8:],
            "exchange_timestamp": kite_time(now),
        })
        self._set(order, "COMPLETE", now)

    def _set(self, order: SimOrder, status: str, now: float, message: str | None = None,
             notify: bool = True) -> None:
        order.status, order.updated_at = status, now
        order.status_message = message
        if order.is_open or status == "UPDATE":
            self.resting[order.order_id] = order
        else:
            self.resting.pop(order.order_id, None)
        snapshot = order.as_kite()
        order.history.append(snapshot)
        if notify:
            self.notify(order.api_key, {**snapshot, "user_id": order.user_id,
                                        "unfilled_quantity": snapshot["pending_quantity"],
                                        "account_id": order.user_id})

    # --- queries ---------------------------------------------------------------------------------
    def orders_of(self, api_key: str) -> list[dict]:
        return [self.orders[i].as_kite() for i in self.by_account.get(api_key, ())]

    def trades_of(self, api_key: str, order_id: str | None = None) -> list[dict]:
        trades = self.trades.get(api_key, [])
        return [t for t in trades if order_id is None or t["order_id"] == order_id]

    def positions_of(self, api_key: str) -> dict:
        net = []
        for (key, row, product), pos in self.positions.items():
            if key == api_key:
                net.append(self._position(row, product, pos))
        return {"net": net, "day": [dict(p) for p in net]}

    def _position(self, row: int, product: str, pos: BookPosition) -> dict:
        ltp = float(self.market.price_rows(np.array([row]))[0])
        qty = pos.buy_quantity - pos.sell_quantity
        buy_price = pos.buy_value / pos.buy_quantity if pos.buy_quantity else 0.0
        sell_price = pos.sell_value / pos.sell_quantity if pos.sell_quantity else 0.0
        pnl = pos.sell_value - pos.buy_value + qty * ltp
        return {
            "tradingsymbol": str(self.uni.symbol[row]), "exchange": self.uni.exchange_of(row),
            "instrument_token": int(self.uni.token[row]), "product": product, "quantity": qty,
            "overnight_quantity": 0, "multiplier": 1,
            "average_price": buy_price if qty >= 0 else sell_price,
            "close_price": float(self.market.prev_close[row]), "last_price": ltp,
            "value": pos.sell_value - pos.buy_value, "pnl": pnl, "m2m": pnl, "unrealised": pnl,
            "realised": 0, "buy_quantity": pos.buy_quantity, "buy_price": buy_price,
            "buy_value": pos.buy_value, "sell_quantity": pos.sell_quantity, "sell_price": sell_price,
            "sell_value": pos.sell_value, "day_buy_quantity": pos.buy_quantity,
            "day_buy_price": buy_price, "day_buy_value": pos.buy_value,
            "day_sell_quantity": pos.sell_quantity, "day_sell_price": sell_price,
            "day_sell_value": pos.sell_value,
        }

    def premium_used(self, api_key: str) -> float:
        return sum(p.buy_value - p.sell_value for (k, _, _), p in self.positions.items() if k == api_key)
