"""Mutual-fund requests (orders and SIPs), the checks Kite makes on them, and the jobs they become.

Pure: no I/O. A fund is named by its ISIN (Kite's MF `tradingsymbol`). Kite's MF instruments carry
each fund's rules, and a request is checked against them whenever they are known (the account's
`mf_instruments` snapshot), so an amount Kite would refuse is a 422 that never leaves the building:
a purchase needs `purchase_allowed`, an amount of at least `minimum_purchase_amount`
(`minimum_additional_purchase_amount` for a fund the account holds) and a multiple of
`purchase_amount_multiplier`; a redemption needs `redemption_allowed`, a quantity of at least
`minimum_redemption_quantity` and a multiple of `redemption_quantity_multiplier`. SIPs: weekly,
monthly (with an `instalment_day` from 1 to 28) or quarterly; `instalments` -1 (until cancelled) or
1-1200; each instalment follows the additional-purchase rules.

Job ids derive from the client's idempotency key, as order jobs' do, and a place job sends Kite the
tag `kite_tag(job_id)`, so a retry finds an order or SIP an earlier attempt placed.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ticker.core.contracts import (
    JOB_CANCEL_MF_ORDER,
    JOB_CANCEL_MF_SIP,
    JOB_MODIFY_MF_SIP,
    JOB_PLACE_MF_ORDER,
    JOB_PLACE_MF_SIP,
)
from ticker.core.orders import OrderIssue, TransactionType, kite_tag

MfKind = Literal["mf_place", "mf_cancel", "sip_place", "sip_modify", "sip_cancel"]
Frequency = Literal["weekly", "monthly", "quarterly"]
SipStatus = Literal["ACTIVE", "PAUSED"]
MAX_INSTALMENTS = 1200
EPS = 1e-6

_ID = r"^[A-Za-z0-9_.:-]+$"
_ISIN = r"^[A-Z0-9]{3,32}$"
_Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)
Account = Field(None, min_length=1, max_length=64, pattern=_ID)
Amount = Field(None, gt=0, le=1e10, allow_inf_nan=False)


class MfFund(BaseModel):
    """One row of Kite's MF instruments: the rules a request is checked against."""

    model_config = ConfigDict(extra="ignore")

    tradingsymbol: str
    name: str = ""
    purchase_allowed: bool = True
    redemption_allowed: bool = True
    minimum_purchase_amount: float = 0.0
    purchase_amount_multiplier: float = 0.0
    minimum_additional_purchase_amount: float = 0.0
    minimum_redemption_quantity: float = 0.0
    redemption_quantity_multiplier: float = 0.0


class MfOrderRequest(BaseModel):
    """A lump-sum purchase (by amount) or redemption (by units)."""

    model_config = _Strict

    account_id: str | None = Account
    tradingsymbol: str = Field(min_length=3, max_length=32, pattern=_ISIN)
    transaction_type: TransactionType
    amount: float | None = Amount
    quantity: float | None = Field(None, gt=0, le=1e10, allow_inf_nan=False)

    @model_validator(mode="after")
    def _amount_or_units(self) -> MfOrderRequest:
        if self.transaction_type == "BUY" and (self.amount is None or self.quantity is not None):
            raise ValueError("a BUY takes an amount (and no quantity)")
        if self.transaction_type == "SELL" and (self.quantity is None or self.amount is not None):
            raise ValueError("a SELL takes a quantity of units (and no amount)")
        return self

    def kite_params(self, tag: str) -> dict[str, Any]:
        return {"tradingsymbol": self.tradingsymbol, "transaction_type": self.transaction_type,
                "amount": self.amount, "quantity": self.quantity, "tag": tag}


class MfSipRequest(BaseModel):
    """A SIP to register."""

    model_config = _Strict

    account_id: str | None = Account
    tradingsymbol: str = Field(min_length=3, max_length=32, pattern=_ISIN)
    amount: float = Field(gt=0, le=1e10, allow_inf_nan=False)
    instalments: int = Field(ge=-1, le=MAX_INSTALMENTS)
    frequency: Frequency
    instalment_day: int | None = Field(None, ge=1, le=28)
    initial_amount: float | None = Amount

    @model_validator(mode="after")
    def _schedule(self) -> MfSipRequest:
        if self.instalments == 0:
            raise ValueError("instalments: -1 (until cancelled) or 1 to 1200")
        if self.frequency == "monthly" and self.instalment_day is None:
            raise ValueError("a monthly SIP needs an instalment_day from 1 to 28")
        return self

    def kite_params(self, tag: str) -> dict[str, Any]:
        return {"tradingsymbol": self.tradingsymbol, "amount": self.amount, "instalments": self.instalments,
                "frequency": self.frequency, "instalment_day": self.instalment_day,
                "initial_amount": self.initial_amount, "tag": tag}


class MfSipModify(BaseModel):
    """What a SIP becomes: only the fields given change."""

    model_config = _Strict

    account_id: str | None = Account
    amount: float | None = Amount
    status: SipStatus | None = None
    instalments: int | None = Field(None, ge=-1, le=MAX_INSTALMENTS)
    frequency: Frequency | None = None
    instalment_day: int | None = Field(None, ge=1, le=28)

    @model_validator(mode="after")
    def _something(self) -> MfSipModify:
        changes = self.model_dump(exclude={"account_id"}, exclude_none=True)
        if not changes:
            raise ValueError("nothing to change: give amount, status, instalments, frequency or instalment_day")
        if self.instalments == 0:
            raise ValueError("instalments: -1 (until cancelled) or 1 to 1200")
        if self.frequency == "monthly" and self.instalment_day is None:
            raise ValueError("a monthly SIP needs an instalment_day from 1 to 28")
        return self

    def kite_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"account_id"}, exclude_none=True)


# --- validation ------------------------------------------------------------------------------------
def _multiple(value: float, step: float) -> bool:
    if step <= 0:
        return True
    ratio = value / step
    return abs(ratio - round(ratio)) <= EPS * max(1.0, abs(ratio))


def purchase_issues(fund: MfFund, amount: float, held: bool | None, field: str = "amount",
                    minimum: float | None = None) -> list[OrderIssue]:
    """Why Kite would refuse this purchase amount. `held` None: whether the account holds the fund is
    not known, so the lower of the two minimums applies."""
    if not fund.purchase_allowed:
        return [OrderIssue(field="tradingsymbol", message=f"purchases are not allowed in {fund.name or fund.tradingsymbol}")]
    if minimum is None:
        fresh, more = fund.minimum_purchase_amount, fund.minimum_additional_purchase_amount
        minimum = more if held else fresh if held is False else min(fresh, more)
    out = []
    if amount + EPS < minimum:
        out.append(OrderIssue(field=field, message=f"the minimum amount for this fund is {minimum:g}"))
    if not _multiple(amount, fund.purchase_amount_multiplier):
        out.append(OrderIssue(field=field, message=f"must be a multiple of {fund.purchase_amount_multiplier:g}"))
    return out


def redemption_issues(fund: MfFund, quantity: float) -> list[OrderIssue]:
    if not fund.redemption_allowed:
        return [OrderIssue(field="tradingsymbol", message=f"redemptions are not allowed in {fund.name or fund.tradingsymbol}")]
    out = []
    if quantity + EPS < fund.minimum_redemption_quantity:
        out.append(OrderIssue(field="quantity", message="the minimum redemption quantity for this fund is "
                              f"{fund.minimum_redemption_quantity:g}"))
    if not _multiple(quantity, fund.redemption_quantity_multiplier):
        out.append(OrderIssue(field="quantity", message=f"must be a multiple of {fund.redemption_quantity_multiplier:g}"))
    return out


def _unknown(symbol: str) -> list[OrderIssue]:
    return [OrderIssue(field="tradingsymbol", message=f"unknown mutual fund {symbol}")]


def validate_mf_order(req: MfOrderRequest, funds: dict[str, MfFund] | None, held: bool | None) -> list[OrderIssue]:
    """Every reason Kite would refuse this order; `funds` None: the fund list is not known (nothing
    to check against)."""
    if funds is None:
        return []
    fund = funds.get(req.tradingsymbol)
    if fund is None:
        return _unknown(req.tradingsymbol)
    if req.transaction_type == "BUY":
        return purchase_issues(fund, req.amount or 0.0, held)
    return redemption_issues(fund, req.quantity or 0.0)


def sip_amount_issues(fund: MfFund, amount: float) -> list[OrderIssue]:
    return purchase_issues(fund, amount, True, "amount", fund.minimum_additional_purchase_amount)


def validate_sip(req: MfSipRequest, funds: dict[str, MfFund] | None, held: bool | None) -> list[OrderIssue]:
    if funds is None:
        return []
    fund = funds.get(req.tradingsymbol)
    if fund is None:
        return _unknown(req.tradingsymbol)
    out = sip_amount_issues(fund, req.amount)
    if req.initial_amount is not None:
        out += purchase_issues(fund, req.initial_amount, held, "initial_amount")
    return out


def funds_of(rows: Any) -> dict[str, MfFund]:
    """The fund rules by ISIN, from Kite's MF instruments as stored (a list of rows)."""
    funds = [MfFund.model_validate(r) for r in rows or []]
    return {f.tradingsymbol: f for f in funds}


def holds(rows: Any, tradingsymbol: str) -> bool:
    """Whether MF holdings (Kite's rows) show units of this fund."""
    return any(r.get("tradingsymbol") == tradingsymbol and float(r.get("quantity") or 0) > 0 for r in rows or [])


# --- ids and job payloads --------------------------------------------------------------------------
def mf_job_id(kind: MfKind, idempotency_key: str | None, account_id: str | None = None) -> str:
    """Deterministic from the client's idempotency key (scoped by account), else fresh."""
    if idempotency_key:
        digest = hashlib.sha256("\x1f".join((kind, account_id or "", idempotency_key)).encode()).hexdigest()
        return f"{kind.replace('_', '-')}-{digest[:24]}"
    return f"{kind.replace('_', '-')}-{uuid.uuid4().hex[:24]}"


class MfPayload(BaseModel):
    """Every MF job's payload: the account, the request (place / modify) and the Kite id acted on."""

    model_config = ConfigDict(extra="forbid")

    account_id: str | None = Account
    order: MfOrderRequest | None = None
    sip: MfSipRequest | None = None
    modify: MfSipModify | None = None
    order_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    sip_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)
    idempotency_key: str | None = Field(None, max_length=255)
    # a replay's original place jobs' tags: an order or SIP carrying one is adopted, not placed again
    prior_tags: list[str] = Field(default_factory=list, max_length=20)


class MfJobPlan(BaseModel):
    """One MF job to enqueue; shaped like an order job plan, so the order audit records it alike."""

    kind: MfKind
    job_name: str
    job_id: str
    account_id: str | None
    payload: dict[str, Any]


MF_JOB_NAMES: dict[MfKind, str] = {"mf_place": JOB_PLACE_MF_ORDER, "mf_cancel": JOB_CANCEL_MF_ORDER,
                                   "sip_place": JOB_PLACE_MF_SIP, "sip_modify": JOB_MODIFY_MF_SIP,
                                   "sip_cancel": JOB_CANCEL_MF_SIP}


def plan_mf(kind: MfKind, account_id: str, idempotency_key: str | None, **parts: Any) -> MfJobPlan:
    """The job for one MF write: `parts` are MfPayload's order / sip / modify / order_id / sip_id."""
    payload = MfPayload(account_id=account_id, idempotency_key=idempotency_key, **parts)
    return MfJobPlan(kind=kind, job_name=MF_JOB_NAMES[kind], job_id=mf_job_id(kind, idempotency_key, account_id),
                     account_id=account_id, payload=payload.model_dump(mode="json", exclude_none=True))


def mf_tag(job_id: str) -> str:
    """The tag a place job sends Kite, so a retry recognises what an earlier attempt placed."""
    return kite_tag(job_id)
