"""GTT (good till triggered) requests, the checks Kite makes on them, and the jobs they become.

Pure: no I/O. A GTT is one condition on an instrument's last price and the order(s) Kite places when
it is met: `single` (one trigger value, one order) or `two-leg` (OCO: a stop-loss value below the
last price and a target above it, `orders[i]` placed when `trigger_values[i]` is hit). The HTTP
layer checks a request with `validate_gtt` before enqueueing (a 422 naming the field) and the job
checks again, so a GTT Kite would refuse for its shape never leaves the building.

Kite's rules (GTT documentation and Zerodha's GTT terms): orders are LIMIT (MARKET is accepted and
placed with automatic market protection); the product is CNC on NSE/BSE and NRML on NFO/BFO; each
trigger value lies at least 0.25% from the last price (9 paise at ₹50 and below); quantities are
lot multiples and prices on the tick grid.

Job ids derive from the client's idempotency key, as order jobs' do. Kite's GTTs carry no tag, so a
place retry that may have reached Kite recognises its GTT by content (`same_gtt`) instead.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ticker.core.contracts import JOB_DELETE_GTT, JOB_MODIFY_GTT, JOB_PLACE_GTT, Names
from ticker.core.orders import InstrumentLike, OrderIssue, Product, TransactionType

GttType = Literal["single", "two-leg"]
GttOrderType = Literal["LIMIT", "MARKET"]
GttExchange = Literal["NSE", "BSE", "NFO", "BFO"]
GttKind = Literal["gtt_place", "gtt_modify", "gtt_delete"]

GTT_PRODUCTS: dict[str, str] = {"NSE": "CNC", "BSE": "CNC", "NFO": "NRML", "BFO": "NRML"}
LEGS_OF_TYPE: dict[str, int] = {"single": 1, "two-leg": 2}
MIN_GAP_PCT, MIN_GAP_ABS, GAP_PRICE_LINE = 0.0025, 0.09, 50.0
GTT_STATUSES = ("active", "triggered", "disabled", "expired", "cancelled", "rejected", "deleted")

_ID = r"^[A-Za-z0-9_.:-]+$"
Price = Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)]
_Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)


class GttOrder(BaseModel):
    """One order of a GTT, on the condition's instrument."""

    model_config = _Strict

    transaction_type: TransactionType
    quantity: int = Field(gt=0, le=10_000_000)
    order_type: GttOrderType = "LIMIT"
    product: Product
    price: float | None = Field(None, gt=0, le=1e9, allow_inf_nan=False)


class GttRequest(BaseModel):
    """A GTT to place (or what an existing one becomes when modified), in Kite's terms."""

    model_config = _Strict

    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    type: GttType
    exchange: GttExchange
    tradingsymbol: str = Field(min_length=1, max_length=64)
    trigger_values: list[Price] = Field(min_length=1, max_length=2)
    last_price: float = Field(gt=0, le=1e9, allow_inf_nan=False)
    orders: list[GttOrder] = Field(min_length=1, max_length=2)

    def kite_params(self) -> dict[str, Any]:
        """The form Kite's place/modify GTT endpoints take: `condition` and `orders` as JSON text."""
        condition = {"exchange": self.exchange, "tradingsymbol": self.tradingsymbol,
                     "trigger_values": self.trigger_values, "last_price": self.last_price}
        orders = [{"exchange": self.exchange, "tradingsymbol": self.tradingsymbol,
                   "transaction_type": o.transaction_type, "quantity": o.quantity, "order_type": o.order_type,
                   "product": o.product, "price": o.price if o.price is not None else 0}
                  for o in self.orders]
        return {"type": self.type, "condition": orjson.dumps(condition).decode(),
                "orders": orjson.dumps(orders).decode()}


# --- validation ------------------------------------------------------------------------------------
def _on_tick(value: float, tick: float) -> bool:
    if tick <= 0:
        return True
    steps = value / tick
    return abs(steps - round(steps)) <= 1e-6


def _trigger_issues(req: GttRequest) -> list[OrderIssue]:
    want = LEGS_OF_TYPE[req.type]
    if len(req.trigger_values) != want:
        return [OrderIssue(field="trigger_values", message=f"a {req.type} GTT takes exactly {want} trigger "
                           f"value(s), got {len(req.trigger_values)}")]
    out: list[OrderIssue] = []
    if req.type == "two-leg" and not req.trigger_values[0] < req.last_price < req.trigger_values[1]:
        out.append(OrderIssue(field="trigger_values", message="for a two-leg GTT the first value (stop-loss) "
                              "must be below last_price and the second (target) above it"))
    gap = req.last_price * MIN_GAP_PCT if req.last_price > GAP_PRICE_LINE else MIN_GAP_ABS
    for i, value in enumerate(req.trigger_values):
        if abs(value - req.last_price) < gap - 1e-9:
            out.append(OrderIssue(field=f"trigger_values.{i}", message=f"trigger value {value:g} is too close to "
                                  f"last_price {req.last_price:g}: it must differ by at least {gap:.2f} "
                                  "(0.25%, or 0.09 at 50 and below)"))
    return out


def _order_issues(i: int, order: GttOrder, exchange: str, lot: int, tick: float) -> list[OrderIssue]:
    at = f"orders.{i}."
    out: list[OrderIssue] = []
    product = GTT_PRODUCTS.get(exchange)
    if order.product != product:
        out.append(OrderIssue(field=at + "product", message=f"GTT orders on {exchange} use the {product} product"))
    if lot > 1 and order.quantity % lot:
        out.append(OrderIssue(field=at + "quantity", message=f"Quantity should be a multiple of lot size {lot}."))
    if order.order_type == "LIMIT" and order.price is None:
        out.append(OrderIssue(field=at + "price", message="price is required for LIMIT orders"))
    if order.order_type == "MARKET" and order.price is not None:
        out.append(OrderIssue(field=at + "price", message="price is not allowed for MARKET orders"))
    if order.price is not None and not _on_tick(order.price, tick):
        out.append(OrderIssue(field=at + "price", message=f"Tick size for this script is {tick:g}. Kindly enter "
                              "price in the multiple of tick size for this script."))
    return out


def _instrument_issues(req: GttRequest, instrument: InstrumentLike | None) -> list[OrderIssue]:
    if instrument is None or instrument.exchange != req.exchange or instrument.tradingsymbol != req.tradingsymbol:
        return [OrderIssue(field="tradingsymbol", message=f"unknown instrument {req.exchange}:{req.tradingsymbol}")]
    if str(instrument.segment).upper() == "INDICES":
        return [OrderIssue(field="tradingsymbol", message=f"{req.tradingsymbol} is an index and cannot be traded")]
    return []


def validate_gtt(req: GttRequest, instrument: InstrumentLike | None) -> list[OrderIssue]:
    """Every reason Kite would refuse this GTT; empty when it is acceptable. `instrument` is the row for
    (exchange, tradingsymbol), None when it is not a known instrument."""
    issues = _instrument_issues(req, instrument)
    if issues:
        return issues
    assert instrument is not None
    out = _trigger_issues(req)
    want = LEGS_OF_TYPE[req.type]
    if len(req.orders) != want:
        out.append(OrderIssue(field="orders", message=f"a {req.type} GTT takes exactly {want} order(s), one per "
                              f"trigger value; got {len(req.orders)}"))
    lot, tick = int(instrument.lot_size), float(instrument.tick_size)
    for i, order in enumerate(req.orders):
        out += _order_issues(i, order, req.exchange, lot, tick)
    return out


def same_gtt(req: GttRequest, kite: dict[str, Any]) -> bool:
    """Whether a GTT as Kite lists it carries exactly this request's condition and orders."""
    cond = kite.get("condition") or {}
    if (kite.get("type"), cond.get("exchange"), cond.get("tradingsymbol")) != \
            (req.type, req.exchange, req.tradingsymbol):
        return False
    values = cond.get("trigger_values") or []
    if len(values) != len(req.trigger_values) or any(
            abs(float(a) - b) > 1e-6 for a, b in zip(values, req.trigger_values, strict=False)):
        return False
    orders = kite.get("orders") or []
    if len(orders) != len(req.orders):
        return False
    for have, want in zip(orders, req.orders, strict=True):
        if (have.get("transaction_type"), have.get("order_type"), have.get("product")) != \
                (want.transaction_type, want.order_type, want.product):
            return False
        if int(have.get("quantity") or 0) != want.quantity:
            return False
        if abs(float(have.get("price") or 0) - float(want.price or 0)) > 1e-6:
            return False
    return True


# --- ids and job payloads --------------------------------------------------------------------------
def gtt_version_key(names: Names, account_id: str) -> str:
    """A counter every completed GTT write bumps: reads derive their job id from it, so a read after a
    write never gets the answer of a read from before it."""
    return names.key("gtt-version", account_id)


def gtt_job_id(kind: GttKind, idempotency_key: str | None, account_id: str | None = None) -> str:
    """Deterministic from the client's idempotency key (scoped by account), else fresh."""
    if idempotency_key:
        digest = hashlib.sha256("\x1f".join((kind, account_id or "", idempotency_key)).encode()).hexdigest()
        return f"{kind.replace('_', '-')}-{digest[:24]}"
    return f"{kind.replace('_', '-')}-{uuid.uuid4().hex[:24]}"


class PlaceGttPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gtt: GttRequest
    idempotency_key: str | None = Field(None, max_length=255)


class ModifyGttPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trigger_id: int = Field(gt=0)
    gtt: GttRequest
    idempotency_key: str | None = Field(None, max_length=255)


class DeleteGttPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trigger_id: int = Field(gt=0)
    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    idempotency_key: str | None = Field(None, max_length=255)


class GttJobPlan(BaseModel):
    """One GTT job to enqueue; shaped like an order job plan, so the order audit records it alike."""

    kind: GttKind
    job_name: str
    job_id: str
    account_id: str | None
    payload: dict[str, Any]


def plan_place_gtt(req: GttRequest, idempotency_key: str | None = None) -> GttJobPlan:
    payload = PlaceGttPayload(gtt=req, idempotency_key=idempotency_key)
    return GttJobPlan(kind="gtt_place", job_name=JOB_PLACE_GTT,
                      job_id=gtt_job_id("gtt_place", idempotency_key, req.account_id),
                      account_id=req.account_id, payload=payload.model_dump(mode="json"))


def plan_modify_gtt(trigger_id: int, req: GttRequest, idempotency_key: str | None = None) -> GttJobPlan:
    payload = ModifyGttPayload(trigger_id=trigger_id, gtt=req, idempotency_key=idempotency_key)
    return GttJobPlan(kind="gtt_modify", job_name=JOB_MODIFY_GTT,
                      job_id=gtt_job_id("gtt_modify", idempotency_key, req.account_id),
                      account_id=req.account_id, payload=payload.model_dump(mode="json"))


def plan_delete_gtt(trigger_id: int, account_id: str | None,
                    idempotency_key: str | None = None) -> GttJobPlan:
    payload = DeleteGttPayload(trigger_id=trigger_id, account_id=account_id, idempotency_key=idempotency_key)
    return GttJobPlan(kind="gtt_delete", job_name=JOB_DELETE_GTT,
                      job_id=gtt_job_id("gtt_delete", idempotency_key, account_id),
                      account_id=account_id, payload=payload.model_dump(mode="json"))
