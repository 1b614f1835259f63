"""Margin previews: what a set of orders would block, asked of Kite before placing them.

Pure: no I/O. A preview is Kite's basket margin call (`POST /margins/basket`): every leg taken alone
(`initial`), all of them together with the hedges between them (`final`), and, with
`consider_positions`, the account's open positions joining the calculation. Each leg is an order as
`POST /orders` takes it and is checked the same way (`ticker.core.orders.validate_order`), so a
preview Kite would refuse for its shape is a 422 before anything is enqueued.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ticker.core.orders import OrderRequest

MAX_MARGIN_LEGS = 50
_ID = r"^[A-Za-z0-9_.:-]+$"
# The order fields Kite's margin calculation reads; the rest of an order does not change its margin.
MARGIN_FIELDS = ("exchange", "tradingsymbol", "transaction_type", "variety", "product", "order_type",
                 "quantity", "price", "trigger_price")


class MarginsRequest(BaseModel):
    """One or more order legs to price together. Legs name no account of their own: the preview is
    for one account (the request's, else the default one)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    orders: list[OrderRequest] = Field(min_length=1, max_length=MAX_MARGIN_LEGS)
    consider_positions: bool = True
    mode: Literal["compact"] | None = None

    def kite_orders(self) -> list[dict[str, Any]]:
        """The JSON array Kite's margin endpoints take."""
        out = []
        for order in self.orders:
            doc = order.model_dump(include=set(MARGIN_FIELDS))
            doc["price"] = doc.get("price") or 0
            doc["trigger_price"] = doc.get("trigger_price") or 0
            out.append(doc)
        return out


class MarginsPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: MarginsRequest


def margins_job_id(idempotency_key: str | None, account_id: str | None) -> str:
    """Deterministic from the client's idempotency key (scoped by account), else fresh."""
    if idempotency_key:
        digest = hashlib.sha256("\x1f".join(("margins", account_id or "", idempotency_key)).encode()).hexdigest()
        return f"margins-{digest[:24]}"
    return f"margins-{uuid.uuid4().hex[:24]}"
