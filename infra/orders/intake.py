"""Accepting orders: resolve the account, take the order in like Kite would (`core/order_intake.py`:
defaults filled in, every rule checked), record the queued audit row, enqueue.

The HTTP routes take the same steps with their cached look-ups and call the same intake; the order
job runs intake again before calling Kite. This is the early, cheap rejection (a 422 naming the field).
"""

from __future__ import annotations

import asyncpg
from arq.connections import ArqRedis
from pydantic import BaseModel

from ticker.core.contracts import Names
from ticker.core.instruments import Instrument
from ticker.core.order_intake import IntakeRules, prepare_modify, prepare_order
from ticker.core.orders import (
    BasketRequest,
    CancelRequest,
    ModifyRequest,
    OrderIssue,
    OrderJobPlan,
    OrderRequest,
    OrderValidationError,
    plan_basket,
    plan_cancel,
    plan_modify,
    plan_place,
)
from ticker.infra.orders.audit_trail import find_by_kite_order, record_basket, record_queued
from ticker.infra.queue.enqueue import enqueue
from ticker.infra.runtime.settings import Settings

_INSTRUMENT_COLUMNS = ("instrument_token, exchange_token, tradingsymbol, name, last_price, expiry, strike,"
                       " tick_size, lot_size, instrument_type, segment, exchange")


class UnknownAccount(LookupError):
    """The order names an account this deployment does not have."""


class Submitted(BaseModel):
    job_id: str
    account_id: str
    duplicate: bool  # True: this idempotency key was seen before; the existing job stands


class BasketSubmitted(BaseModel):
    basket_id: str
    account_id: str
    job_ids: list[str]
    duplicate: bool


async def find_instrument(db: asyncpg.Pool, exchange: str, tradingsymbol: str) -> Instrument | None:
    """The active instrument with this symbol on this exchange."""
    row = await db.fetchrow(
        f"SELECT {_INSTRUMENT_COLUMNS} FROM instruments WHERE exchange = $1 AND tradingsymbol = $2 AND is_active"
        " ORDER BY updated_at DESC LIMIT 1", exchange, tradingsymbol,
    )
    if row is None:
        return None
    return Instrument(**dict(row))


async def known_account_ids(db: asyncpg.Pool, settings: Settings) -> list[str]:
    """Accounts orders may name: the active ones in Postgres, else the one settings configure."""
    active = [r["account_id"] for r in await db.fetch(
        "SELECT account_id FROM kite_accounts WHERE is_active ORDER BY account_id")]
    return active or ([settings.kite_account_id] if settings.kite_api_key else [])


async def resolve_account_id(db: asyncpg.Pool, settings: Settings, requested: str | None) -> str:
    """The account an order goes to: the one named, else KITE_ACCOUNT_ID when it exists, else the first
    active account. Orders never move to another account than this."""
    known = await known_account_ids(db, settings)
    if requested is not None:
        if requested not in known:
            raise UnknownAccount(f"unknown Kite account {requested!r}")
        return requested
    if settings.kite_account_id in known:
        return settings.kite_account_id
    if not known:
        raise UnknownAccount("no Kite account is configured")
    return known[0]


def intake_rules(settings: Settings) -> IntakeRules:
    """What order intake fills in, from the deployment's settings (web and worker alike)."""
    return IntakeRules(market_protection=settings.order_market_protection)


async def check_place(db: asyncpg.Pool, settings: Settings, req: OrderRequest, field_prefix: str = "") -> OrderRequest:
    """The order as it will be sent (defaults filled in), or OrderValidationError naming the field
    (prefixed for basket legs)."""
    try:
        return prepare_order(req, await find_instrument(db, req.exchange, req.tradingsymbol), intake_rules(settings))
    except OrderValidationError as exc:
        named = [OrderIssue(field=field_prefix + i.field, message=i.message) for i in exc.issues]
        raise OrderValidationError(named[0].field, named[0].message, named) from None


async def modified_instrument(db: asyncpg.Pool, kite_order_id: str) -> Instrument | None:
    """The instrument of an order we placed (None when it was not placed through us)."""
    original = await find_by_kite_order(db, kite_order_id)
    order = (original.payload.get("order") if original else None) or {}
    return await find_instrument(db, order["exchange"], order["tradingsymbol"]) if order else None


async def _accept(arq: ArqRedis, db: asyncpg.Pool, names: Names, plan: OrderJobPlan, account_id: str) -> Submitted:
    fresh = await record_queued(db, plan, account_id)
    enqueued = await enqueue(arq, names, plan.job_name, plan.payload, job_id=plan.job_id)
    return Submitted(job_id=plan.job_id, account_id=account_id, duplicate=not (fresh or enqueued))


async def submit_place(arq: ArqRedis, db: asyncpg.Pool, names: Names, settings: Settings, req: OrderRequest,
                       idempotency_key: str | None = None) -> Submitted:
    account_id = await resolve_account_id(db, settings, req.account_id)
    req = req.model_copy(update={"account_id": account_id})
    req = await check_place(db, settings, req)
    return await _accept(arq, db, names, plan_place(req, idempotency_key), account_id)


async def submit_modify(arq: ArqRedis, db: asyncpg.Pool, names: Names, settings: Settings, req: ModifyRequest,
                        idempotency_key: str | None = None) -> Submitted:
    account_id = await resolve_account_id(db, settings, req.account_id)
    req = req.model_copy(update={"account_id": account_id})
    req = prepare_modify(req, await modified_instrument(db, req.order_id), intake_rules(settings))
    return await _accept(arq, db, names, plan_modify(req, idempotency_key), account_id)


async def submit_cancel(arq: ArqRedis, db: asyncpg.Pool, names: Names, settings: Settings, req: CancelRequest,
                        idempotency_key: str | None = None) -> Submitted:
    account_id = await resolve_account_id(db, settings, req.account_id)
    req = req.model_copy(update={"account_id": account_id})
    return await _accept(arq, db, names, plan_cancel(req, idempotency_key), account_id)


async def submit_basket(arq: ArqRedis, db: asyncpg.Pool, names: Names, settings: Settings, basket: BasketRequest,
                        idempotency_key: str | None = None) -> BasketSubmitted:
    """Validate every leg first (nothing is enqueued if one is invalid), then one job per leg."""
    account_id = await resolve_account_id(db, settings, basket.account_id)
    legs = []
    for i, leg in enumerate(basket.legs):
        leg_account = await resolve_account_id(db, settings, leg.account_id or account_id)
        leg = leg.model_copy(update={"account_id": leg_account})
        legs.append(await check_place(db, settings, leg, f"legs.{i}."))
    plan = plan_basket(basket.model_copy(update={"account_id": account_id, "legs": legs}), idempotency_key)
    fresh = await record_basket(db, plan, idempotency_key)
    accepted = [await _accept(arq, db, names, leg, leg.account_id or account_id) for leg in plan.legs]
    return BasketSubmitted(basket_id=plan.basket_id, account_id=account_id, job_ids=[a.job_id for a in accepted],
                           duplicate=not fresh and all(a.duplicate for a in accepted))
