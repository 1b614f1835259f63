"""GTTs and margin previews: every one a job (202 + where to poll), as orders are.

Writes (`POST /gtt`, `PUT` and `DELETE /gtt/{trigger_id}`) go through the order intake
(`ticker.infra.orders.intake`) and are checked exactly as the GTT job checks them (`ticker.core.gtt`): a GTT Kite would refuse is a 422 naming the field and nothing is
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

from ticker.core.contracts import JOB_PORTFOLIO
from ticker.core.gtt import GttRequest, gtt_version_key
from ticker.core.margins import MarginsRequest
from ticker.http.accept import accepted, submit
from ticker.http.inputs import Strict, path_int, read_json, read_query
from ticker.http.middleware.errors import ApiError
from ticker.http.routes.orders_api import idempotency_key, intake_errors, submitted
from ticker.http.state import services
from ticker.infra.queue.enqueue import scoped_job_id

routes = web.RouteTableDef()

GTT_PATH = "/gtt/{trigger_id}"
MIN_READ_WINDOW = 0.5  # seconds: reads within one window share a job even with caching off


class AccountQuery(Strict):
    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


def _trigger_id(request: web.Request) -> int:
    trigger_id = path_int(request, "trigger_id")
    if trigger_id <= 0:
        raise ApiError(422, "validation_error", "trigger_id must be a positive integer",
                       [{"field": "trigger_id", "location": "path", "message": "not a positive integer",
                         "type": "greater_than"}])
    return trigger_id


# --- writes ----------------------------------------------------------------------------------------
@routes.post("/gtt")
async def place_gtt(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    req = await read_json(request, GttRequest)
    with intake_errors("GTT"):
        return submitted(await svc.intake.place_gtt(req, key))


@routes.put(GTT_PATH)
async def modify_gtt(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    trigger_id = _trigger_id(request)
    req = await read_json(request, GttRequest)
    with intake_errors("GTT"):
        return submitted(await svc.intake.modify_gtt(trigger_id, req, key))


@routes.delete(GTT_PATH)
async def delete_gtt(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    trigger_id = _trigger_id(request)
    q = read_query(request, AccountQuery)
    with intake_errors("GTT"):
        return submitted(await svc.intake.delete_gtt(trigger_id, q.account_id, key))


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
    job_id = scoped_job_id(svc.names, "gtt-read", account, trigger_id or "all", version, slot)
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
    with intake_errors("margin preview"):
        return submitted(await svc.intake.margins(req, key))
