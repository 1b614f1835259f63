"""`/subscriptions`: what the streamer should stream.

Each change is written to Postgres (the source of truth a starting streamer reads) and announced on
the control channel (how a running streamer learns of it within a second). The response returns as
soon as both are done; it never waits for the streamer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
from aiohttp import web
from pydantic import Field

from ticker.core.contracts import ControlMessage
from ticker.http.inputs import Page, Strict, path_token, read_json, read_query
from ticker.http.middleware.errors import ApiError, json_response, not_found
from ticker.http.state import Services, services
from ticker.infra.queue.control import publish_control

routes = web.RouteTableDef()

Token = Annotated[int, Field(ge=0, lt=1 << 32)]
_COLUMNS = ("instrument_token, requested_mode, account_id, status, source, deactivated_reason, "
            "created_at, updated_at")


class SubscriptionIn(Strict):
    instrument_token: Token
    requested_mode: Literal["FULL", "QUOTE", "LTP"] = "FULL"
    account_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class SubscriptionQuery(Page):
    status: Literal["active", "inactive"] | None = None


def _doc(row: asyncpg.Record) -> dict[str, Any]:
    return {k: row[k] for k in _COLUMNS.split(", ")}


async def _announce(svc: Services, token: int, account_id: str | None, reason: str) -> None:
    message = ControlMessage(kind="subscriptions", account_id=account_id, tokens=[token], reason=reason)
    await publish_control(svc.redis, svc.names, message)


@routes.post("/subscriptions")
async def create_subscription(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_json(request, SubscriptionIn)
    instrument = await svc.refs.instrument_by_token(body.instrument_token)
    if instrument is None or not instrument["is_active"]:
        state = "unknown" if instrument is None else "retired"
        raise ApiError(422, "validation_error", f"instrument_token: {state} instrument {body.instrument_token}",
                       [{"field": "instrument_token", "location": "body", "message": f"{state} instrument",
                         "type": "unknown_instrument"}])
    if body.account_id is not None:
        await svc.refs.require_account(body.account_id)
    row = await svc.db.fetchrow(
        f"""
        INSERT INTO subscriptions (instrument_token, requested_mode, account_id, status, source)
        VALUES ($1, $2, $3, 'active', 'api')
        ON CONFLICT (instrument_token) DO UPDATE SET requested_mode = EXCLUDED.requested_mode,
            account_id = EXCLUDED.account_id, status = 'active', deactivated_reason = NULL, updated_at = now()
        RETURNING {_COLUMNS}, (xmax = 0) AS inserted
        """,
        body.instrument_token, body.requested_mode, body.account_id,
    )
    await _announce(svc, body.instrument_token, body.account_id, "subscribed")
    return json_response(_doc(row), status=201 if row["inserted"] else 200)


@routes.get("/subscriptions")
async def list_subscriptions(request: web.Request) -> web.Response:
    svc = services(request)
    q = read_query(request, SubscriptionQuery)
    rows = await svc.db.fetch(
        f"SELECT {_COLUMNS} FROM subscriptions "
        "WHERE ($1::text IS NULL OR status = $1) ORDER BY instrument_token LIMIT $2 OFFSET $3",
        q.status, q.limit + 1, q.offset,
    )
    return json_response(q.doc("subscriptions", [_doc(r) for r in rows]))


@routes.get("/subscriptions/{token}")
async def get_subscription(request: web.Request) -> web.Response:
    svc = services(request)
    token = path_token(request)
    row = await svc.db.fetchrow(f"SELECT {_COLUMNS} FROM subscriptions WHERE instrument_token = $1", token)
    if row is None:
        raise not_found("subscription", token)
    return json_response(_doc(row))


@routes.delete("/subscriptions/{token}")
async def delete_subscription(request: web.Request) -> web.Response:
    """Deactivates (kept for the record); repeating it is harmless."""
    svc = services(request)
    token = path_token(request)
    row = await svc.db.fetchrow(
        f"""
        UPDATE subscriptions SET status = 'inactive',
            deactivated_reason = CASE WHEN status = 'active' THEN 'unsubscribed via API' ELSE deactivated_reason END,
            updated_at = CASE WHEN status = 'active' THEN now() ELSE updated_at END
        WHERE instrument_token = $1 RETURNING {_COLUMNS}
        """,
        token,
    )
    if row is None:
        raise not_found("subscription", token)
    await _announce(svc, token, row["account_id"], "unsubscribed")
    return json_response(_doc(row))
