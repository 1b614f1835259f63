"""GTTs and margin previews: every one a job (202 + where to poll), as orders are.

Writes (`POST /gtt`, `PUT` and `DELETE /gtt/{trigger_id}`) are checked here exactly as the GTT job
checks them (`ticker.core.gtt`): a GTT Kite would refuse is a 422 naming the field and nothing is
enqueued. They get an audit row before their job, an `Idempotency-Key` fixes the job id (the same key
with a different request is a 409), and their jobs retry and dead-letter like order jobs.

Reads (`GET /gtt`, `GET /gtt/{trigger_id}`) are jobs too, like every read of Kite state: this
process holds no Kite client (only workers talk to Kite, through the static-IP egress when one is
set). A read's job id is derived from the account, the GTT, the current PORTFOLIO_CACHE_SECONDS window
and the account's GTT version (bumped by every completed GTT write), so clients polling together
share one Kite call per window, and a read after a write of ours never gets an older answer.

`POST /orders/margins` prices one or more order legs with Kite's basket margins
(`consider_positions`, `mode=compact`); each leg is checked as `POST /orders` checks an order.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from pydantic import Field

from ticker.core.contracts import JOB_ORDER_MARGINS, JOB_PORTFOLIO
from ticker.core.gtt import (
    GttJobPlan,
    GttRequest,
    gtt_version_key,
    plan_delete_gtt,
    plan_modify_gtt,
    plan_place_gtt,
    validate_gtt,
)
from ticker.core.margins import MarginsPayload, MarginsRequest, margins_job_id
from ticker.core.order_intake import prepare_order
from ticker.core.orders import OrderIssue, OrderValidationError
from ticker.http.accept import accepted, submit
from ticker.http.inputs import Strict, path_int, read_json, read_query
from ticker.http.middleware.errors import ApiError
from ticker.http.routes.orders_api import IDEMPOTENCY_HEADER, idempotency_key
from ticker.http.state import Services, services
from ticker.infra.orders.audit_trail import get_order
from ticker.infra.orders.intake import intake_rules
from ticker.infra.queue.enqueue import derived_job_id

routes = web.RouteTableDef()

GTT_PATH = "/gtt/{trigger_id}"
MIN_READ_WINDOW = 0.5  # seconds: reads within one window share a job even with caching off


class AccountQuery(Strict):
    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


def _issues_error(issues: list[OrderIssue], what: str, prefix: str = "") -> ApiError:
    details = [{"field": f"{prefix}{i.field}", "location": "body", "message": i.message, "type": "order_rule"}
               for i in issues]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return ApiError(422, "validation_error", f"{what} refused: {summary}", details)


def _trigger_id(request: web.Request) -> int:
    trigger_id = path_int(request, "trigger_id")
    if trigger_id <= 0:
        raise ApiError(422, "validation_error", "trigger_id must be a positive integer",
                       [{"field": "trigger_id", "location": "path", "message": "not a positive integer",
                         "type": "greater_than"}])
    return trigger_id


async def _checked_gtt(svc: Services, request: web.Request) -> GttRequest:
    req = await read_json(request, GttRequest)
    account = await svc.refs.resolve_account(req.account_id)
    req = req.model_copy(update={"account_id": account})  # the job id and payload name the account
    issues = validate_gtt(req, await svc.refs.instrument(req.exchange, req.tradingsymbol))
    if issues:
        raise _issues_error(issues, "GTT")
    return req


async def _accept(svc: Services, plan: GttJobPlan, account_id: str) -> web.Response:
    """Audit row first, then the job; a repeat of an accepted request must be the same request."""
    new = True
    if not await svc.audit.record(plan, account_id):  # type: ignore[arg-type]  # same columns as orders
        existing = await get_order(svc.db, plan.job_id)
        if existing is not None and existing.payload != plan.payload:
            raise ApiError(409, "idempotency_conflict", f"{IDEMPOTENCY_HEADER} was already used for a different "
                           "request", {"job_id": plan.job_id})
        new = existing is None or existing.status == "queued"
    if new:
        new = await submit(svc, plan.job_name, plan.payload, plan.job_id)
    return accepted(plan.job_id, new, account_id=account_id)


# --- writes ----------------------------------------------------------------------------------------
@routes.post("/gtt")
async def place_gtt(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    req = await _checked_gtt(svc, request)
    return await _accept(svc, plan_place_gtt(req, key), req.account_id or "")


@routes.put(GTT_PATH)
async def modify_gtt(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    trigger_id = _trigger_id(request)
    req = await _checked_gtt(svc, request)
    return await _accept(svc, plan_modify_gtt(trigger_id, req, key), req.account_id or "")


@routes.delete(GTT_PATH)
async def delete_gtt(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    trigger_id = _trigger_id(request)
    q = read_query(request, AccountQuery)
    account = await svc.refs.resolve_account(q.account_id)
    return await _accept(svc, plan_delete_gtt(trigger_id, account, key), account)


# --- reads -----------------------------------------------------------------------------------------
async def _read(request: web.Request, trigger_id: int | None) -> web.Response:
    svc = services(request)
    q = read_query(request, AccountQuery)
    account = await svc.refs.resolve_account(q.account_id)
    window = max(svc.settings.portfolio_cache_seconds, MIN_READ_WINDOW)
    slot = int(time.time() // window)
    version = int(await svc.redis.get(gtt_version_key(svc.names, account)) or 0)
    payload: dict[str, Any] = {"account_id": account, "kind": "gtt" if trigger_id else "gtts"}
    if trigger_id:
        payload["trigger_id"] = trigger_id
    job_id = derived_job_id("gtt-read", account, trigger_id or "all", version, slot)
    new = await submit(svc, JOB_PORTFOLIO, payload, job_id)
    return accepted(job_id, new, account_id=account)


@routes.get("/gtt")
async def list_gtts(request: web.Request) -> web.Response:
    return await _read(request, None)


@routes.get(GTT_PATH)
async def get_gtt(request: web.Request) -> web.Response:
    return await _read(request, _trigger_id(request))


# --- margin preview --------------------------------------------------------------------------------
@routes.post("/orders/margins")
async def order_margins(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    req = await read_json(request, MarginsRequest)
    account = await svc.refs.resolve_account(req.account_id)
    issues: list[OrderIssue] = []
    legs = []
    for i, leg in enumerate(req.orders):
        if leg.account_id not in (None, account):
            issues.append(OrderIssue(field=f"orders.{i}.account_id",
                                     message="a margin preview is for one account: name it once, at the top"))
            continue
        try:  # each leg as POST /orders would take it: defaults (market protection) filled, rules checked
            legs.append(prepare_order(leg, await svc.refs.instrument(leg.exchange, leg.tradingsymbol),
                                      intake_rules(svc.settings)))
        except OrderValidationError as exc:
            issues += [OrderIssue(field=f"orders.{i}.{x.field}", message=x.message) for x in exc.issues]
    if issues:
        raise _issues_error(issues, "margin preview")
    req = req.model_copy(update={"account_id": account,
                                 "orders": [leg.model_copy(update={"account_id": None}) for leg in legs]})
    job_id = margins_job_id(key, account)
    new = await submit(svc, JOB_ORDER_MARGINS, MarginsPayload(request=req).model_dump(mode="json"), job_id)
    return accepted(job_id, new, account_id=account)
