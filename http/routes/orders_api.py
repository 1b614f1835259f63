"""Orders: place, modify, cancel and baskets as jobs (202 + where to poll), and the audit trail.

Every order goes through the order intake (`ticker.infra.orders.intake`: validate -> audit ->
enqueue). It is taken in exactly as the order job takes it in (`ticker.core.order_intake`: defaults
such as market protection filled in, then Kite's rules), so an order Kite would refuse is a 422
naming the field and nothing is enqueued. The `Idempotency-Key` header fixes the job id: a repeat
returns the same job; the same key with a different order is a 409. Each accepted order gets its
audit row before it is enqueued, so its record exists from the start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from ticker.core.orders import BasketRequest, CancelRequest, ModifyRequest, OrderRequest, OrderValidationError
from ticker.http.accept import accepted, status_url
from ticker.http.inputs import Page, parse_json, read_body, read_json, read_query
from ticker.http.middleware.errors import ApiError, json_response, not_found, validation_error
from ticker.http.state import services
from ticker.infra.orders.audit_trail import list_orders
from ticker.infra.orders.intake import IdempotencyConflict, Submitted
from ticker.infra.orders.order_view import order_view
from ticker.infra.queue.status import basket_status

routes = web.RouteTableDef()

IDEMPOTENCY_HEADER = "Idempotency-Key"
# "basket" and "margins" are not order ids: each is its own resource, so PUT/DELETE there are a 405.
ORDER_PATH = "/orders/{order_id:(?!(?:basket|margins)$)[^/]+}"
_BASKET_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class OrdersQuery(Page):
    limit: int = Field(50, ge=1, le=200)
    account_id: str | None = Field(None, max_length=64)
    status: str | None = Field(None, max_length=32)
    basket_id: str | None = Field(None, max_length=64)


class CancelQuery(BaseModel):
    model_config = CancelRequest.model_config

    account_id: str | None = None
    variety: Literal["regular", "amo", "co", "iceberg", "auction"] = "regular"
    parent_order_id: str | None = None


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiError(422, "validation_error", f"{IDEMPOTENCY_HEADER}: 1 to 255 printable characters",
                       [{"field": IDEMPOTENCY_HEADER, "location": "header", "message": "1 to 255 printable "
                         "characters", "type": "string_pattern_mismatch"}])
    return key


def refused(exc: OrderValidationError, what: str = "order") -> ApiError:
    """A 422 naming each field at fault."""
    details = [{"field": i.field, "location": "body", "message": i.message, "type": "order_rule"} for i in exc.issues]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return ApiError(422, "validation_error", f"{what} refused: {summary}", details)


def conflict(exc: IdempotencyConflict) -> ApiError:
    return ApiError(409, "idempotency_conflict", f"{IDEMPOTENCY_HEADER} was already used for a different "
                    "request", {"job_id": exc.job_id})


@contextmanager
def intake_errors(what: str = "order") -> Iterator[None]:
    """The intake's refusals as HTTP errors."""
    try:
        yield
    except OrderValidationError as exc:
        raise refused(exc, what) from None
    except IdempotencyConflict as exc:
        raise conflict(exc) from None


def submitted(done: Submitted) -> web.Response:
    return accepted(done.job_id, not done.duplicate, account_id=done.account_id)


@routes.post("/orders")
async def place_order(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    order = await read_json(request, OrderRequest)
    with intake_errors():
        return submitted(await svc.intake.place(order, key))


def path_order_id(request: web.Request) -> str:
    order_id = request.match_info["order_id"]
    try:
        CancelRequest(order_id=order_id)
    except ValidationError as exc:
        raise validation_error(exc, "path") from None
    return order_id


def _with_order_id(body: bytes, order_id: str) -> bytes:
    """The path names the order; a body that names another one is a mistake worth refusing."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body  # parse_json reports it properly
    if isinstance(doc, dict):
        if doc.setdefault("order_id", order_id) != order_id:
            raise ApiError(422, "validation_error", "order_id: differs from the order id in the path",
                           [{"field": "order_id", "location": "body", "message": "differs from the path",
                             "type": "mismatch"}])
        return orjson.dumps(doc)
    return body


@routes.put(ORDER_PATH)
async def modify_order(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    order_id = path_order_id(request)
    req = parse_json(ModifyRequest, _with_order_id(await read_body(request), order_id))
    with intake_errors():
        return submitted(await svc.intake.modify(req, key))


@routes.delete(ORDER_PATH)
async def cancel_order(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    q = read_query(request, CancelQuery)
    try:
        req = CancelRequest(order_id=path_order_id(request), **q.model_dump())
    except ValidationError as exc:
        raise validation_error(exc, "query") from None
    with intake_errors():
        return submitted(await svc.intake.cancel(req, key))


@routes.get(ORDER_PATH)
async def get_order_view(request: web.Request) -> web.Response:
    """One order by Kite order id (or placing job id): Kite's latest view and our audit trail."""
    order_id = path_order_id(request)
    view = await order_view(services(request).db, order_id)
    if view is None:
        raise not_found("order", order_id)
    return json_response(view.model_dump(mode="json"))


@routes.post("/orders/basket")
async def place_basket(request: web.Request) -> web.Response:
    svc = services(request)
    key = idempotency_key(request)
    basket = await read_json(request, BasketRequest)
    with intake_errors():
        done = await svc.intake.basket(basket, key)
    jobs = [{"leg": leg.leg, "job_id": leg.job_id, "status_url": status_url(leg.job_id), "duplicate": leg.duplicate}
            for leg in done.legs]
    url = f"/baskets/{done.basket_id}"
    return json_response({"basket_id": done.basket_id, "status_url": url, "duplicate": done.duplicate,
                          "jobs": jobs}, status=202, headers={"Location": url})


@routes.get("/baskets/{basket_id}")
async def get_basket(request: web.Request) -> web.Response:
    svc = services(request)
    basket_id = request.match_info["basket_id"]
    valid = _BASKET_ID.match(basket_id) is not None
    status = await basket_status(svc.redis, svc.db, svc.names, basket_id) if valid else None
    if status is None:
        raise not_found("basket", basket_id[:64])
    return json_response(status.model_dump(mode="json"))


@routes.get("/orders")
async def audit_orders(request: web.Request) -> web.Response:
    svc = services(request)
    q = read_query(request, OrdersQuery)
    records = await list_orders(svc.db, limit=q.limit + 1, offset=q.offset, account_id=q.account_id,
                                status=q.status, basket_id=q.basket_id)
    return json_response(q.doc("orders", [r.model_dump(mode="json") for r in records]))
