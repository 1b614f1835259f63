"""Operations: instrument and token refresh and the order sync on demand, the dead-letter queue, Kite's
login callback."""

from __future__ import annotations

import uuid
from typing import Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ticker.core.contracts import (
    JOB_EXCHANGE_REQUEST_TOKEN,
    JOB_REFRESH_INSTRUMENTS,
    JOB_REFRESH_TOKENS,
    JOB_SYNC_ORDERS,
)
from ticker.http.accept import accepted, submit
from ticker.http.inputs import Page, QueryBool, Strict, parse_json, path_int, read_body, read_query
from ticker.http.middleware.errors import ApiError, json_response, not_found
from ticker.http.state import services
from ticker.infra.queue.enqueue import scoped_job_id
from ticker.infra.stores.deadletters import DeadLetterNotFound, list_dead_letters

routes = web.RouteTableDef()

_ID = r"^[A-Za-z0-9_.:-]+$"
Exchange = Literal["NSE", "BSE", "NFO", "CDS", "BFO", "MCX", "BCD", "NCO"]


class InstrumentRefreshIn(Strict):
    exchanges: list[Exchange] | None = Field(None, min_length=1, max_length=8)


S = TypeVar("S", bound=Strict)


class OneAccountIn(Strict):
    """The body of an on-demand job that runs for one account, or (none named) for every one."""

    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)


class DlqQuery(Page):
    limit: int = Field(50, ge=1, le=500)
    account_id: str | None = Field(None, max_length=64)
    pending_only: QueryBool = False


class ReplayQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # other parameters were never refused here

    # the n-th replay of this letter: asking for the same n again is the same job (default: the next n)
    replay_number: int | None = Field(None, ge=1, le=1_000_000)


class KiteCallbackQuery(BaseModel):
    # Kite adds its own parameters (action, type, ...) to the redirect; they are not ours to refuse.
    model_config = ConfigDict(extra="ignore")

    request_token: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9]+$")
    status: str | None = Field(None, max_length=32)
    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=_ID)


async def _optional_json(request: web.Request, model: type[S]) -> S:
    """An empty body means every default."""
    if not request.body_exists:
        return model()
    return parse_json(model, await read_body(request))


@routes.post("/admin/instrument-refresh")
async def instrument_refresh(request: web.Request) -> web.Response:
    svc = services(request)
    body = await _optional_json(request, InstrumentRefreshIn)
    payload = body.model_dump(exclude_none=True)
    job_id = f"instruments-manual-{uuid.uuid4().hex[:16]}"
    return accepted(job_id, await submit(svc, JOB_REFRESH_INSTRUMENTS, payload, job_id))


async def _for_accounts(request: web.Request, job_name: str, prefix: str) -> web.Response:
    """Enqueue `job_name` now for the account named in the body (a known one), or for every account."""
    svc = services(request)
    body = await _optional_json(request, OneAccountIn)
    if body.account_id is not None:
        await svc.refs.require_account(body.account_id)
    job_id = f"{prefix}-manual-{uuid.uuid4().hex[:16]}"
    return accepted(job_id, await submit(svc, job_name, body.model_dump(exclude_none=True), job_id))


@routes.post("/admin/token-refresh")
async def token_refresh(request: web.Request) -> web.Response:
    return await _for_accounts(request, JOB_REFRESH_TOKENS, "tokens")


@routes.post("/admin/order-sync")
async def order_sync(request: web.Request) -> web.Response:
    """The scheduled order sync, now: Kite's order book brought into the audit for the open orders of
    one account, or of every account that has any."""
    return await _for_accounts(request, JOB_SYNC_ORDERS, "order-sync")


@routes.get("/dlq")
async def dead_letters(request: web.Request) -> web.Response:
    svc = services(request)
    q = read_query(request, DlqQuery)
    letters = await list_dead_letters(svc.db, limit=q.limit + 1, offset=q.offset, account_id=q.account_id,
                                      pending_only=q.pending_only)
    return json_response(q.doc("dead_letters", [d.model_dump(mode="json") for d in letters]))


@routes.post("/dlq/{id}/replay")
async def replay(request: web.Request) -> web.Response:
    """Through the order intake (audit row, then the job); `replay_number` repeats a given replay."""
    svc = services(request)
    letter_id = path_int(request, "id")
    q = read_query(request, ReplayQuery)
    try:
        done = await svc.intake.replay(letter_id, q.replay_number)
    except DeadLetterNotFound:
        raise not_found("dead letter", letter_id) from None
    return accepted(done.job_id, done.enqueued, dead_letter_id=done.dead_letter_id,
                    original_job_id=done.original_job_id)


@routes.get("/auth/kite/callback")
async def kite_callback(request: web.Request) -> web.Response:
    """Where Kite sends the browser after login: hand the request token to the exchange job."""
    svc = services(request)
    q = read_query(request, KiteCallbackQuery)
    if q.status != "success":
        raise ApiError(400, "login_failed", f"Kite login did not succeed (status={q.status or 'missing'})")
    if q.request_token is None:
        raise ApiError(422, "validation_error", "request_token: missing from the callback",
                       [{"field": "request_token", "location": "query", "message": "Field required",
                         "type": "missing"}])
    account = await svc.refs.resolve_account(q.account_id)
    job_id = scoped_job_id(svc.names, "kite-login", account, q.request_token)
    payload = {"account_id": account, "request_token": q.request_token}
    new = await submit(svc, JOB_EXCHANGE_REQUEST_TOKEN, payload, job_id)
    return accepted(job_id, new, account_id=account,
                    message="login received; the access token is being exchanged")
