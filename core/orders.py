"""Order requests as clients send them, the checks Kite makes on them, and the job plans they become.

Pure: no I/O. Order intake (`core/order_intake.py`: the HTTP layer before enqueueing, a 422 naming
the field, and the order job again before calling Kite) fills in defaults and then validates with
`validate_order`, so an order Kite would reject for its shape never leaves the building. Job ids derive from the client's idempotency key and the Kite `tag` from the job id,
which is how a retry recognises an order it already placed.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ticker.core.contract_specs import max_order_quantity
from ticker.core.contracts import JOB_CANCEL_ORDER, JOB_MODIFY_ORDER, JOB_PLACE_ORDER

Exchange = Literal["NSE", "BSE", "NFO", "CDS", "BFO", "MCX", "BCD"]
TransactionType = Literal["BUY", "SELL"]
Product = Literal["CNC", "NRML", "MIS", "MTF"]
OrderType = Literal["MARKET", "LIMIT", "SL", "SL-M"]
Variety = Literal["regular", "amo", "co", "iceberg", "auction"]
Validity = Literal["DAY", "IOC", "TTL"]
OrderKind = Literal["place", "modify", "cancel"]

EQUITY_EXCHANGES = frozenset({"NSE", "BSE"})
PRICED_TYPES = frozenset({"LIMIT", "SL"})
TRIGGERED_TYPES = frozenset({"SL", "SL-M"})
KITE_TAG_MAX = 20
MAX_BASKET_LEGS = 50
# Kite refuses MARKET and SL-M orders without market protection (SEBI's retail-algo rules, April 2026):
# -1 lets Kite choose the protection, 1..100 is a percentage; 0 (none) is refused.
MARKET_PROTECTED_TYPES = frozenset({"MARKET", "SL-M"})
AUTO_MARKET_PROTECTION = -1
PROTECTION_RULE = "use -1 (automatic protection) or a whole percentage from 1 to 100; 0 (no protection) is refused"
MAX_AUTOSLICES = 10  # Kite splits an autoslice order into at most this many orders

_ID = r"^[A-Za-z0-9_.:-]+$"
_Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)


class InstrumentLike(Protocol):
    """What validation needs of an instrument (`ticker.core.instruments.Instrument` satisfies it).
    Read-only, so an instrument whose fields are narrower (a Literal type) still fits."""

    @property
    def exchange(self) -> str: ...
    @property
    def tradingsymbol(self) -> str: ...
    @property
    def lot_size(self) -> int: ...
    @property
    def tick_size(self) -> float: ...
    @property
    def instrument_type(self) -> str: ...
    @property
    def segment(self) -> str: ...


class OrderIssue(BaseModel):
    """One reason an order is invalid, naming the request field at fault."""

    field: str
    message: str


class OrderValidationError(ValueError):
    """An order Kite would refuse; `field` names the first offending request field."""

    def __init__(self, field: str, message: str, issues: list[OrderIssue] | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.issues = issues or [OrderIssue(field=field, message=message)]


class OrderJobFailed(RuntimeError):
    """An order job's final failure (it is in the dead-letter queue); the message says why."""


def market_protection_value(value: Any) -> int | None:
    """`value` as a market protection Kite accepts (None stays None), else ValueError saying the rule.
    Numbers written as text are read as numbers; a fraction or a boolean is not a percentage here."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(PROTECTION_RULE) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(PROTECTION_RULE)
    if value != int(value) or not (value == AUTO_MARKET_PROTECTION or 1 <= value <= 100):
        raise ValueError(PROTECTION_RULE)
    return int(value)


MarketProtection = Annotated[int | None, BeforeValidator(market_protection_value)]


# --- requests ----------------------------------------------------------------------------------
class OrderRequest(BaseModel):
    """A new order, in Kite's own field names. `tag` is the client's label, kept in the audit."""

    model_config = _Strict

    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    exchange: Exchange
    tradingsymbol: str = Field(min_length=1, max_length=64)
    transaction_type: TransactionType
    quantity: int = Field(gt=0, le=10_000_000)
    product: Product
    order_type: OrderType
    variety: Variety = "regular"
    validity: Validity = "DAY"
    price: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    trigger_price: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    disclosed_quantity: int | None = Field(None, ge=0)
    validity_ttl: int | None = Field(None, ge=1, le=1440)
    iceberg_legs: int | None = Field(None, ge=2, le=10)
    iceberg_quantity: int | None = Field(None, gt=0)
    auction_number: str | None = Field(None, min_length=1, max_length=16, pattern=r"^[0-9]+$")
    market_protection: MarketProtection = None
    autoslice: bool | None = None  # over the freeze quantity: Kite splits the order (at most 10 slices)
    tag: str | None = Field(None, min_length=1, max_length=KITE_TAG_MAX, pattern=r"^[A-Za-z0-9]+$")

    def kite_params(self, kite_tag: str) -> dict[str, Any]:
        """The form Kite's place-order endpoint takes (variety goes in the path)."""
        body = self.model_dump(exclude={"account_id", "variety", "tag"}, exclude_none=True)
        body["tag"] = kite_tag
        return body


class ModifyRequest(BaseModel):
    """Changes to an open order; only the fields given are sent."""

    model_config = _Strict

    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    order_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    variety: Variety = "regular"
    parent_order_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    quantity: int | None = Field(None, gt=0, le=10_000_000)
    price: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    order_type: OrderType | None = None
    trigger_price: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    validity: Validity | None = None
    disclosed_quantity: int | None = Field(None, ge=0)
    market_protection: MarketProtection = None  # needed when the order becomes MARKET or SL-M

    def kite_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"account_id", "variety", "order_id"}, exclude_none=True)


class CancelRequest(BaseModel):
    model_config = _Strict

    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    order_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    variety: Variety = "regular"
    parent_order_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)


class BasketRequest(BaseModel):
    """Orders submitted together; each leg becomes its own job. A leg without an account uses the
    basket's account (or the default one); legs never move to another account."""

    model_config = _Strict

    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    legs: list[OrderRequest] = Field(min_length=1, max_length=MAX_BASKET_LEGS)


# --- validation ----------------------------------------------------------------------------------
def _on_tick(value: float, tick: float) -> bool:
    if tick <= 0:
        return True
    steps = value / tick
    return math.isclose(steps, round(steps), rel_tol=0, abs_tol=1e-6)


def _tick_message(tick: float, what: str) -> str:
    return (f"Tick size for this script is {tick:g}. Kindly enter {what} in the multiple of tick size "
            "for this script.")


def _price_issues(req: OrderRequest, tick: float) -> list[OrderIssue]:
    out: list[OrderIssue] = []
    priced, triggered = req.order_type in PRICED_TYPES, req.order_type in TRIGGERED_TYPES
    if priced and not req.price:
        out.append(OrderIssue(field="price", message=f"price is required for {req.order_type} orders"))
    if not priced and req.price:
        out.append(OrderIssue(field="price", message=f"price is not allowed for {req.order_type} orders"))
    needs_trigger = triggered or req.variety == "co"
    if needs_trigger and not req.trigger_price:
        out.append(OrderIssue(field="trigger_price",
                              message=f"trigger_price is required for {req.order_type}/{req.variety} orders"))
    if not needs_trigger and req.trigger_price:
        out.append(OrderIssue(field="trigger_price",
                              message=f"trigger_price is not allowed for {req.order_type} orders"))
    if req.price and not _on_tick(req.price, tick):
        out.append(OrderIssue(field="price", message=_tick_message(tick, "price")))
    if req.trigger_price and not _on_tick(req.trigger_price, tick):
        out.append(OrderIssue(field="trigger_price", message=_tick_message(tick, "trigger price")))
    if req.order_type == "SL" and req.price and req.trigger_price:
        if req.transaction_type == "BUY" and req.trigger_price > req.price:
            out.append(OrderIssue(field="trigger_price",
                                  message="trigger price for a stoploss buy order must not exceed the price"))
        if req.transaction_type == "SELL" and req.trigger_price < req.price:
            out.append(OrderIssue(field="trigger_price",
                                  message="trigger price for a stoploss sell order must not be below the price"))
    return out


def _quantity_issues(req: OrderRequest, lot: int) -> list[OrderIssue]:
    out: list[OrderIssue] = []
    if req.quantity <= 0:
        out.append(OrderIssue(field="quantity", message="quantity must be a positive number"))
    elif lot > 1 and req.quantity % lot:
        out.append(OrderIssue(field="quantity", message=f"Quantity should be a multiple of lot size {lot}."))
    if req.disclosed_quantity and req.disclosed_quantity > req.quantity:
        out.append(OrderIssue(field="disclosed_quantity", message="disclosed_quantity cannot exceed quantity"))
    if req.iceberg_quantity and lot > 1 and req.iceberg_quantity % lot:
        out.append(OrderIssue(field="iceberg_quantity",
                              message=f"iceberg_quantity should be a multiple of lot size {lot}."))
    return out


def _variety_issues(req: OrderRequest) -> list[OrderIssue]:
    out: list[OrderIssue] = []
    if (req.validity == "TTL") != (req.validity_ttl is not None):
        out.append(OrderIssue(field="validity_ttl", message="validity_ttl (minutes) is required exactly "
                              "when validity is TTL"))
    if req.variety == "iceberg":
        if req.iceberg_legs is None:
            out.append(OrderIssue(field="iceberg_legs", message="iceberg_legs is required for iceberg orders"))
        if req.iceberg_quantity is None:
            out.append(OrderIssue(field="iceberg_quantity",
                                  message="iceberg_quantity is required for iceberg orders"))
        elif req.iceberg_quantity > req.quantity:
            out.append(OrderIssue(field="iceberg_quantity", message="iceberg_quantity cannot exceed quantity"))
    elif req.iceberg_legs is not None or req.iceberg_quantity is not None:
        out.append(OrderIssue(field="iceberg_legs", message="iceberg fields are only for the iceberg variety"))
    if (req.variety == "auction") != (req.auction_number is not None):
        out.append(OrderIssue(field="auction_number",
                              message="auction_number is required exactly for the auction variety"))
    if req.variety == "co" and req.product != "MIS":
        out.append(OrderIssue(field="product", message="cover orders must use the MIS product"))
    return out


def _protection_issues(order_type: str | None, protection: int | None) -> list[OrderIssue]:
    if order_type in MARKET_PROTECTED_TYPES and protection is None:
        return [OrderIssue(field="market_protection",
                           message=f"market_protection is required for {order_type} orders: {PROTECTION_RULE}")]
    return []


def _freeze_issues(req: OrderRequest, lot: int, freeze: int | None) -> list[OrderIssue]:
    """NSE's freeze quantity: the most units one order may carry. Over it, Kite places the order as
    slices when asked to (`autoslice`), at most MAX_AUTOSLICES of them; iceberg legs each fit in it."""
    if not freeze:
        return []
    if req.variety == "iceberg":
        out = []
        if req.autoslice:
            out.append(OrderIssue(field="autoslice", message="autoslice is not for iceberg orders (each leg "
                                  "must fit the freeze quantity instead)"))
        if req.iceberg_quantity and req.iceberg_quantity > freeze:
            out.append(OrderIssue(field="iceberg_quantity", message=f"each iceberg leg can be at most the "
                                  f"freeze quantity of {freeze} for this contract"))
        return out
    if req.quantity <= freeze:
        return []
    if not req.autoslice:
        return [OrderIssue(field="quantity", message=f"quantity {req.quantity} is over the freeze limit of {freeze} "
                           "for this contract: send at most that, or set autoslice: true to have it sliced")]
    size = max_order_quantity(freeze, lot)
    if -(-req.quantity // size) > MAX_AUTOSLICES:
        return [OrderIssue(field="quantity", message=f"quantity {req.quantity} is too large even with autoslice: "
                           f"at most {MAX_AUTOSLICES} slices of {size} ({MAX_AUTOSLICES * size}) per order, "
                           f"freeze limit {freeze}")]
    return []


def _product_issues(req: OrderRequest, instrument: InstrumentLike) -> list[OrderIssue]:
    equity = req.exchange in EQUITY_EXCHANGES and instrument.instrument_type == "EQ"
    if req.product in ("CNC", "MTF") and not equity:
        return [OrderIssue(field="product", message=f"{req.product} is only for equity on NSE/BSE; use NRML or MIS")]
    if req.product == "NRML" and equity:
        return [OrderIssue(field="product", message="NRML is for derivatives; use CNC or MIS for equity")]
    return []


def _instrument_issues(req: OrderRequest, instrument: InstrumentLike | None) -> list[OrderIssue]:
    if instrument is None or instrument.exchange != req.exchange or instrument.tradingsymbol != req.tradingsymbol:
        return [OrderIssue(field="tradingsymbol",
                           message=f"unknown instrument {req.exchange}:{req.tradingsymbol}")]
    if str(instrument.segment).upper() == "INDICES":
        return [OrderIssue(field="tradingsymbol", message=f"{req.tradingsymbol} is an index and cannot be traded")]
    return []


def validate_order(req: OrderRequest, instrument: InstrumentLike | None,
                   freeze: int | None = None) -> list[OrderIssue]:
    """Every reason Kite would refuse this order; empty when it is acceptable.

    `instrument` is the row for (exchange, tradingsymbol); None means it is not a known instrument.
    `freeze` is the contract's freeze quantity (None or 0: no limit known). Order intake
    (`ticker.core.order_intake`) fills in defaults first and then calls this.
    """
    issues = _instrument_issues(req, instrument)
    if issues:
        return issues
    assert instrument is not None
    lot = int(instrument.lot_size)
    return [
        *_quantity_issues(req, lot),
        *_freeze_issues(req, lot, freeze),
        *_price_issues(req, float(instrument.tick_size)),
        *_variety_issues(req),
        *_protection_issues(req.order_type, req.market_protection),
        *_product_issues(req, instrument),
    ]


def validate_modify(req: ModifyRequest, instrument: InstrumentLike | None = None,
                    freeze: int | None = None) -> list[OrderIssue]:
    """Checks on a modification; lot, tick and freeze checks apply when the order's instrument is known
    (a modification cannot be sliced: the new quantity must fit the freeze quantity)."""
    changes = req.kite_params()
    changes.pop("parent_order_id", None)
    if not changes:
        return [OrderIssue(field="order_id", message="nothing to modify: give quantity, price, order_type, "
                           "trigger_price, validity or disclosed_quantity")]
    out: list[OrderIssue] = []
    if instrument is not None:
        lot, tick = int(instrument.lot_size), float(instrument.tick_size)
        if req.quantity and lot > 1 and req.quantity % lot:
            out.append(OrderIssue(field="quantity", message=f"Quantity should be a multiple of lot size {lot}."))
        if req.price and not _on_tick(req.price, tick):
            out.append(OrderIssue(field="price", message=_tick_message(tick, "price")))
        if req.trigger_price and not _on_tick(req.trigger_price, tick):
            out.append(OrderIssue(field="trigger_price", message=_tick_message(tick, "trigger price")))
    if freeze and req.quantity and req.quantity > freeze and req.variety != "iceberg":
        out.append(OrderIssue(field="quantity", message=f"quantity {req.quantity} is over the freeze limit of "
                              f"{freeze} for this contract (a modification cannot be sliced)"))
    if req.order_type in PRICED_TYPES and req.price is not None and req.price <= 0:
        out.append(OrderIssue(field="price", message=f"price is required for {req.order_type} orders"))
    return out + _protection_issues(req.order_type, req.market_protection)


def check_order(req: OrderRequest, instrument: InstrumentLike | None) -> None:
    """`validate_order`, raising OrderValidationError for the first issue (all issues attached)."""
    raise_issues(validate_order(req, instrument))


def check_modify(req: ModifyRequest, instrument: InstrumentLike | None = None) -> None:
    raise_issues(validate_modify(req, instrument))


def raise_issues(issues: list[OrderIssue]) -> None:
    """OrderValidationError for the first issue (all attached), when there is one."""
    if issues:
        raise OrderValidationError(issues[0].field, issues[0].message, issues)


# --- ids and tags ----------------------------------------------------------------------------------
def _digest(*parts: object, size: int = 24) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:size]


def order_job_id(kind: OrderKind, idempotency_key: str | None, account_id: str | None = None) -> str:
    """Deterministic from the client's idempotency key (scoped by account), else fresh."""
    if idempotency_key:
        return f"ord-{kind}-{_digest(kind, account_id or '', idempotency_key)}"
    return f"ord-{kind}-{uuid.uuid4().hex[:24]}"


def basket_id_for(idempotency_key: str | None, account_id: str | None = None) -> str:
    if idempotency_key:
        return f"bsk-{_digest('basket', account_id or '', idempotency_key)}"
    return f"bsk-{uuid.uuid4().hex[:24]}"


def basket_leg_job_id(basket_id: str, leg: int) -> str:
    return f"{basket_id.replace('bsk-', 'ord-place-', 1)}-{leg}"


def kite_tag(job_id: str) -> str:
    """The Kite `tag` an order job places with: alphanumeric, at most 20 characters, one per job."""
    return "tk" + _digest("tag", job_id, size=KITE_TAG_MAX - 2)


def replay_key(original_job_id: str, replay_number: int) -> str:
    """The idempotency key of the n-th replay of a dead-lettered job (so replaying twice is two jobs,
    and repeating the same replay request is one)."""
    return f"replay:{original_job_id}:{replay_number}"


# --- job payloads ----------------------------------------------------------------------------------
class PlaceOrderPayload(BaseModel):
    """What a place_order job receives. `prior_tags` are tags of earlier jobs for the same intent
    (a replay's original): an order already carrying one of them is adopted, not placed again."""

    model_config = ConfigDict(extra="forbid")

    order: OrderRequest
    idempotency_key: str | None = Field(None, max_length=255)
    basket_id: str | None = None
    leg: int | None = Field(None, ge=0)
    prior_tags: list[str] = Field(default_factory=list, max_length=20)


class ModifyOrderPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modify: ModifyRequest
    idempotency_key: str | None = Field(None, max_length=255)


class CancelOrderPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cancel: CancelRequest
    idempotency_key: str | None = Field(None, max_length=255)


class OrderJobPlan(BaseModel):
    """One job to enqueue: `enqueue(pool, names, plan.job_name, plan.payload, job_id=plan.job_id)`."""

    kind: OrderKind
    job_name: str
    job_id: str
    account_id: str | None
    payload: dict[str, Any]


class BasketPlan(BaseModel):
    basket_id: str
    account_id: str | None
    legs: list[OrderJobPlan]


def plan_place(req: OrderRequest, idempotency_key: str | None = None, *, basket_id: str | None = None,
               leg: int | None = None, prior_tags: list[str] | None = None,
               job_id: str | None = None) -> OrderJobPlan:
    payload = PlaceOrderPayload(order=req, idempotency_key=idempotency_key, basket_id=basket_id, leg=leg,
                                prior_tags=prior_tags or [])
    return OrderJobPlan(kind="place", job_name=JOB_PLACE_ORDER,
                        job_id=job_id or order_job_id("place", idempotency_key, req.account_id),
                        account_id=req.account_id, payload=payload.model_dump(mode="json"))


def plan_modify(req: ModifyRequest, idempotency_key: str | None = None) -> OrderJobPlan:
    payload = ModifyOrderPayload(modify=req, idempotency_key=idempotency_key)
    return OrderJobPlan(kind="modify", job_name=JOB_MODIFY_ORDER,
                        job_id=order_job_id("modify", idempotency_key, req.account_id),
                        account_id=req.account_id, payload=payload.model_dump(mode="json"))


def plan_cancel(req: CancelRequest, idempotency_key: str | None = None) -> OrderJobPlan:
    payload = CancelOrderPayload(cancel=req, idempotency_key=idempotency_key)
    return OrderJobPlan(kind="cancel", job_name=JOB_CANCEL_ORDER,
                        job_id=order_job_id("cancel", idempotency_key, req.account_id),
                        account_id=req.account_id, payload=payload.model_dump(mode="json"))


def plan_basket(basket: BasketRequest, idempotency_key: str | None = None) -> BasketPlan:
    """One place job per leg, ids derived from the basket id so a repeated submission is a no-op."""
    basket_id = basket_id_for(idempotency_key, basket.account_id)
    legs = []
    for i, leg in enumerate(basket.legs):
        req = leg if leg.account_id else leg.model_copy(update={"account_id": basket.account_id})
        key = f"{idempotency_key}#leg{i}" if idempotency_key else None
        legs.append(plan_place(req, key, basket_id=basket_id, leg=i, job_id=basket_leg_job_id(basket_id, i)))
    return BasketPlan(basket_id=basket_id, account_id=basket.account_id, legs=legs)
