"""BookPosition conversion, `PUT /portfolio/positions`: move part of an open position to another
product (MIS <-> NRML for F&O, MIS <-> CNC for equity), as Kite's convert_position does.

The request names the position by exchange, tradingsymbol, `transaction_type` (BUY for a long
position, SELL for a short one) and `position_type` (`day` or `overnight`), and the quantity to move
from `old_product` to `new_product`. Every position in the stand-in is opened the same day, so
`overnight` never finds one. The converted quantity leaves the old product's position at its
average price and joins the new product's, so day P&L is unchanged.
"""

from __future__ import annotations

from ticker.infra.kitesim.envelopes import input_error
from ticker.infra.kitesim.order_book import BookPosition, OrderBook
from ticker.infra.kitesim.order_rules import PRODUCTS, TRANSACTION_TYPES

POSITION_TYPES = ("day", "overnight")
# Products a position may be held in, per exchange (CNC is refused for F&O, NRML for equity cash).
PRODUCTS_BY_EXCHANGE = {"NFO": ("MIS", "NRML"), "BFO": ("MIS", "NRML"), "NSE": ("MIS", "CNC", "MTF"),
                        "BSE": ("MIS", "CNC", "MTF")}


def _choice(form: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = (form.get(name) or "").strip()
    if not value:
        raise input_error(f"Missing or empty field `{name}`.")
    if value not in allowed:
        raise input_error(f"Invalid `{name}`. Allowed: {', '.join(allowed)}.")
    return value


def convert_position(book: OrderBook, api_key: str, form: dict[str, str]) -> None:
    exchange, symbol = (form.get("exchange") or "").strip(), (form.get("tradingsymbol") or "").strip()
    row = book.uni.row_of_symbol.get((exchange, symbol))
    if row is None:
        raise input_error("The instrument has either expired or does not exist.")
    side = _choice(form, "transaction_type", TRANSACTION_TYPES)
    position_type = _choice(form, "position_type", POSITION_TYPES)
    old, new = _choice(form, "old_product", PRODUCTS), _choice(form, "new_product", PRODUCTS)
    raw = (form.get("quantity") or "").strip()
    if not raw.isdigit() or int(raw) <= 0:
        raise input_error("Invalid `quantity`: must be a whole number greater than 0.")
    quantity = int(raw)
    if old == new:
        raise input_error("`old_product` and `new_product` are the same.")
    allowed = PRODUCTS_BY_EXCHANGE.get(exchange, ())
    if new not in allowed:
        raise input_error(f"Product {new} is not allowed for {exchange} instruments. "
                          f"Allowed: {', '.join(allowed)}.")
    lot = int(book.uni.lot[row])
    if lot > 1 and quantity % lot:
        raise input_error(f"Quantity should be a multiple of the lot size ({lot}).")
    if position_type == "overnight":
        raise input_error(f"No overnight {old} position in {symbol} to convert.")
    pos = book.positions.get((api_key, row, old))
    net = 0 if pos is None else pos.buy_quantity - pos.sell_quantity
    held = net if side == "BUY" else -net
    if pos is None or held < quantity:
        have = "long" if side == "BUY" else "short"
        raise input_error(f"Insufficient {have} {old} position in {symbol} to convert {quantity} "
                          f"(open: {max(held, 0)}).")
    _move(book, pos, (api_key, row, new), side, quantity)
    if pos.buy_quantity == 0 and pos.sell_quantity == 0:
        del book.positions[(api_key, row, old)]


def _move(book: OrderBook, src: BookPosition, key: tuple[str, int, str], side: str, quantity: int) -> None:
    dst = book.positions.setdefault(key, BookPosition())
    if side == "BUY":
        value = src.buy_value / src.buy_quantity * quantity
        src.buy_quantity -= quantity
        src.buy_value -= value
        dst.buy_quantity += quantity
        dst.buy_value += value
    else:
        value = src.sell_value / src.sell_quantity * quantity
        src.sell_quantity -= quantity
        src.sell_value -= value
        dst.sell_quantity += quantity
        dst.sell_value += value
