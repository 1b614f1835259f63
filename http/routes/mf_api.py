"""Mutual funds: lump-sum orders and SIPs as jobs (202 + where to poll), and the account's MF snapshots.

Writes (`POST /mf/orders`, `DELETE /mf/orders/{order_id}`, `POST /mf/sips`, `PUT` and `DELETE
/mf/sips/{sip_id}`) go through the order intake (`ticker.infra.orders.intake`) as orders and GTTs do:
checked against Kite's rules for the fund (`ticker.core.mutual_funds`, with the fund's limits from the
account's MF instruments snapshot once there is one) so an amount Kite would refuse is a 422 naming the
field and nothing is enqueued; an audit row before the job; `Idempotency-Key` fixes the job id; the
jobs retry and dead-letter like order jobs. A finished job's result carries Kite's `order_id` or `sip_id`.

Reads (`GET /mf/instruments`, `/mf/orders`, `/mf/sips`, `/mf/holdings`, served with every other
snapshot read by `portfolio_api`) give the account's latest snapshot with its `as_of`; `?refresh=true` (or no snapshot yet) answers
202 with the refresh job that fetches all four. MF orders complete at the fund's next NAV, so an
order's progress shows in a later snapshot.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field, ValidationError

from ticker.core.mutual_funds import MfOrderRequest, MfSipModify, MfSipRequest
from ticker.http.inputs import Strict, read_json, read_query
from ticker.http.middleware.errors import validation_error
from ticker.http.routes.orders_api import idempotency_key, intake_errors, submitted
from ticker.http.state import services

routes = web.RouteTableDef()


class AccountOnly(Strict):
    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class KiteId(Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


def _path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    try:
        KiteId(id=value)
    except ValidationError as exc:
        raise validation_error(exc, "path") from None
    return value


# --- writes ----------------------------------------------------------------------------------------
@routes.post("/mf/orders")
async def place_order(request: web.Request) -> web.Response:
    svc, key = services(request), idempotency_key(request)
    req = await read_json(request, MfOrderRequest)
    with intake_errors("MF order"):
        return submitted(await svc.intake.mf_order(req, key))


@routes.delete("/mf/orders/{order_id}")
async def cancel_order(request: web.Request) -> web.Response:
    svc, key = services(request), idempotency_key(request)
    order_id = _path_id(request, "order_id")
    q = read_query(request, AccountOnly)
    with intake_errors("MF order cancel"):
        return submitted(await svc.intake.cancel_mf_order(order_id, q.account_id, key))


@routes.post("/mf/sips")
async def place_sip(request: web.Request) -> web.Response:
    svc, key = services(request), idempotency_key(request)
    req = await read_json(request, MfSipRequest)
    with intake_errors("SIP"):
        return submitted(await svc.intake.mf_sip(req, key))


@routes.put("/mf/sips/{sip_id}")
async def modify_sip(request: web.Request) -> web.Response:
    svc, key = services(request), idempotency_key(request)
    sip_id = _path_id(request, "sip_id")
    req = await read_json(request, MfSipModify)
    with intake_errors("SIP"):
        return submitted(await svc.intake.modify_mf_sip(sip_id, req, key))


@routes.delete("/mf/sips/{sip_id}")
async def cancel_sip(request: web.Request) -> web.Response:
    svc, key = services(request), idempotency_key(request)
    sip_id = _path_id(request, "sip_id")
    q = read_query(request, AccountOnly)
    with intake_errors("SIP cancel"):
        return submitted(await svc.intake.cancel_mf_sip(sip_id, q.account_id, key))
