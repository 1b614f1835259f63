"""Order intake: the one place that turns a client's order into the order Kite is sent.

The HTTP API, `infra/orders/intake.py` and the order job itself all call `prepare_order` /
`prepare_modify`, so defaults are filled in and Kite's rules checked the same way everywhere:

- a MARKET or SL-M order (or a modification into one) that names no `market_protection` gets the
  deployment's default (ORDER_MARKET_PROTECTION, -1 = Kite's automatic protection). The filled-in
  order is what the audit records and what Kite receives.
- the contract's freeze quantity comes from NSE's dated table (`core/contract_specs.py`) by the
  instrument's name; an `autoslice` flag on an order that needs no slicing is dropped, because Kite
  refuses to slice an order that fits in one.
- then every rule of `validate_order` / `validate_modify` (`core/orders.py`); a refusal raises
  OrderValidationError naming each field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ticker.core.clock import IST
from ticker.core.contract_specs import order_freeze
from ticker.core.orders import (
    AUTO_MARKET_PROTECTION,
    MARKET_PROTECTED_TYPES,
    InstrumentLike,
    ModifyRequest,
    OrderRequest,
    raise_issues,
    validate_modify,
    validate_order,
)


@dataclass(frozen=True)
class IntakeRules:
    """The deployment's choices that intake applies."""

    market_protection: int = AUTO_MARKET_PROTECTION  # for MARKET/SL-M orders that name none
    today: date | None = None  # the trading day whose freeze limits apply; None: today in IST

    def day(self) -> date:
        return self.today or datetime.now(IST).date()


def freeze_of(instrument: InstrumentLike | None, on: date) -> int | None:
    """The most units one order in `instrument` may carry: NSE's freeze quantity for the index
    derivatives the table lists, 0 (no limit) for instruments without an expiry, None when unknown
    (Kite then decides, and says so if it refuses)."""
    if instrument is None:
        return None
    if getattr(instrument, "expiry", None) is None:
        return 0
    return order_freeze(str(getattr(instrument, "name", "") or ""), on)


def _needs_slicing(req: OrderRequest, freeze: int | None) -> bool:
    if freeze is None:
        return True  # unknown: the client's word stands
    return bool(freeze) and req.quantity > freeze


def prepare_order(req: OrderRequest, instrument: InstrumentLike | None, rules: IntakeRules) -> OrderRequest:
    """`req` with the defaults filled in, or OrderValidationError naming every field at fault."""
    freeze = freeze_of(instrument, rules.day())
    changes: dict[str, Any] = {}
    if req.order_type in MARKET_PROTECTED_TYPES and req.market_protection is None:
        changes["market_protection"] = rules.market_protection
    if req.autoslice is False or (req.autoslice and req.variety != "iceberg" and not _needs_slicing(req, freeze)):
        changes["autoslice"] = None  # sent only when it does something
    if changes:
        req = req.model_copy(update=changes)
    raise_issues(validate_order(req, instrument, freeze))
    return req


def prepare_modify(req: ModifyRequest, instrument: InstrumentLike | None, rules: IntakeRules) -> ModifyRequest:
    """A modification with the defaults filled in (an order turned MARKET/SL-M gets market protection;
    one that already is keeps its own at Kite), or OrderValidationError."""
    if req.order_type in MARKET_PROTECTED_TYPES and req.market_protection is None:
        req = req.model_copy(update={"market_protection": rules.market_protection})
    raise_issues(validate_modify(req, instrument, freeze_of(instrument, rules.day())))
    return req
