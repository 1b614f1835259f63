"""Order jobs: place, modify and cancel at Kite, each exactly once in effect.

A place sends the Kite `tag` derived from its job id. Whenever an earlier attempt may have reached
Kite (a timeout, a crash mid-call, a replay of a dead letter) the attempt first looks the tag up in
the account's order book and adopts what it finds instead of placing again. Modify and cancel check
the order's current state on a retry for the same reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from arq.worker import func
from pydantic import BaseModel, ValidationError

from ticker.core.contracts import JOB_CANCEL_ORDER, JOB_MODIFY_ORDER, JOB_PLACE_ORDER
from ticker.core.order_intake import prepare_modify, prepare_order
from ticker.core.orders import (
    CancelOrderPayload,
    ModifyOrderPayload,
    OrderKind,
    OrderValidationError,
    PlaceOrderPayload,
    kite_tag,
)
from ticker.infra.kite.rest import KiteApi
from ticker.infra.kite.schemas import Order
from ticker.infra.orders.validate import UnknownAccount, find_instrument, intake_rules, resolve_account_id
from ticker.jobs.context import deps
from ticker.jobs.orders.runner import Attempt, OrderJob, Outcome, fail_for_good, pace_lookup, run_order_job

KINDS: dict[str, tuple[str, type[BaseModel], str]] = {
    "place": (JOB_PLACE_ORDER, PlaceOrderPayload, "order"),
    "modify": (JOB_MODIFY_ORDER, ModifyOrderPayload, "modify"),
    "cancel": (JOB_CANCEL_ORDER, CancelOrderPayload, "cancel"),
}


async def _open(ctx: dict[str, Any], payload: dict[str, Any], kind: OrderKind) -> tuple[Any, Any, OrderJob]:
    """(payload model, request with its account resolved, job). A payload that can never succeed is
    dead-lettered here, before anything else happens."""
    d = deps(ctx)
    job_name, model, field = KINDS[kind]
    job = OrderJob(deps=d, job_id=ctx["job_id"], job_try=ctx["job_try"], job_name=job_name, kind=kind,
                   account_id="", payload=payload)
    try:
        p: Any = model.model_validate(payload)  # one of KINDS' payload models
        req = getattr(p, field)
        # The named account as is (its credentials look-up rejects an unknown one), else the default.
        account_id = req.account_id or await resolve_account_id(d.db, d.settings, None)
    except ValidationError as exc:
        err = exc.errors()[0]
        await fail_for_good(job, f"invalid payload: {'.'.join(map(str, err['loc']))}: {err['msg']}")
    except UnknownAccount as exc:
        await fail_for_good(job, str(exc))
    req = req.model_copy(update={"account_id": account_id})
    job = replace(job, account_id=account_id, idempotency_key=p.idempotency_key,
                  payload={**p.model_dump(mode="json"), field: req.model_dump(mode="json")})
    return p, req, job


# --- place -------------------------------------------------------------------------------------
async def find_by_tags(api: KiteApi, tags: list[str], timeout: float) -> Order | None:
    """The order in today's order book carrying one of these tags (Kite returns `tag` and `tags`)."""
    wanted = set(tags)
    return next((order for order in await api.orders(timeout=timeout) if order.carries(wanted)), None)


async def place_order(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    p, order, job = await _open(ctx, payload, "place")
    d, tag = job.deps, kite_tag(job.job_id)
    job = replace(job, tag=tag, prior_tags=p.prior_tags, basket_id=p.basket_id, client_tag=order.tag)

    async def check() -> str | None:
        """Intake again, as the web did (an order queued some other way gets the same treatment)."""
        nonlocal order
        instrument = await find_instrument(d.db, order.exchange, order.tradingsymbol)
        try:
            order = prepare_order(order, instrument, intake_rules(d.settings))
        except OrderValidationError as exc:
            return f"{exc.field}: {exc.message}"
        return None

    timeout = d.settings.order_request_timeout
    tags = [tag, *p.prior_tags]

    async def lookup(api: KiteApi) -> Outcome | None:
        await pace_lookup(job)
        found = await find_by_tags(api, tags, timeout)
        if found is None:
            return None
        return Outcome(kite_order_id=found.order_id, adopted=True, kite_status=found.status)

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist:
            found = await lookup(api)
            if found is not None:
                return found
        await attempt.sending()
        placed = await api.place_order(order.variety, order.kite_params(tag), timeout=timeout)
        return Outcome(kite_order_id=placed.order_id)

    return await run_order_job(job, action, recover=lookup, check=check)


# --- modify ------------------------------------------------------------------------------------
def _already_applied(latest: Order, changes: dict[str, Any]) -> bool:
    """Whether the order already shows every requested change (an earlier attempt went through)."""
    for name, wanted in changes.items():
        have = getattr(latest, name, None)
        if isinstance(wanted, float | int) and isinstance(have, float | int):
            if abs(float(have) - float(wanted)) > 1e-9:
                return False
        elif have != wanted:
            return False
    return True


async def _latest_state(api: KiteApi, order_id: str, timeout: float) -> Order | None:
    history = await api.order_history(order_id, timeout=timeout)
    return history[-1] if history else None


async def modify_order(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    _, req, job = await _open(ctx, payload, "modify")
    d = job.deps
    try:
        req = prepare_modify(req, None, intake_rules(d.settings))
    except OrderValidationError as exc:
        await fail_for_good(job, f"{exc.field}: {exc.message}")  # before any audit: cheap
    timeout = d.settings.order_request_timeout
    # what the order book shows once applied (Kite does not echo market_protection as it was sent)
    changes = {k: v for k, v in req.kite_params().items() if k not in ("parent_order_id", "market_protection")}

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist:
            await pace_lookup(job)
            latest = await _latest_state(api, req.order_id, timeout)
            if latest is not None and _already_applied(latest, changes):
                return Outcome(kite_order_id=req.order_id, adopted=True, kite_status=latest.status)
        await attempt.sending()
        modified = await api.modify_order(req.variety, req.order_id, req.kite_params(), timeout=timeout)
        return Outcome(kite_order_id=modified.order_id)

    return await run_order_job(job, action)


# --- cancel ------------------------------------------------------------------------------------
async def cancel_order(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    _, req, job = await _open(ctx, payload, "cancel")
    d = job.deps
    timeout = d.settings.order_request_timeout

    async def action(api: KiteApi, attempt: Attempt) -> Outcome:
        if attempt.may_exist:
            await pace_lookup(job)
            latest = await _latest_state(api, req.order_id, timeout)
            if latest is not None and latest.status == "CANCELLED":
                return Outcome(kite_order_id=req.order_id, adopted=True, kite_status="CANCELLED")
        await attempt.sending()
        cancelled = await api.cancel_order(req.variety, req.order_id, req.parent_order_id, timeout=timeout)
        return Outcome(kite_order_id=cancelled.order_id, kite_status="CANCELLED")

    return await run_order_job(job, action)


FUNCTIONS = [
    func(place_order, name=JOB_PLACE_ORDER),
    func(modify_order, name=JOB_MODIFY_ORDER),
    func(cancel_order, name=JOB_CANCEL_ORDER),
]
