"""`GET /portfolio/{positions,holdings,margins}`, `GET /trades`, `GET /account/profile` and
`GET /mf/{instruments,orders,sips,holdings}`: the account's latest snapshot of that kind from Redis;
`GET /orders/{order_id}/trades`: one order's trades out of its account's trades snapshot.

Snapshots are written by the `refresh_portfolio` job (on a schedule in market hours, after order
updates, and when asked here), so a read never waits on Kite. `?refresh=true` asks for a fresh one:
202 with the refresh job to poll, then read again. With no snapshot yet the answer is the same 202 (a
client asking for positions wants them, not a 404): the refresh is queued and the job says when.
A refresh already queued and not yet started is shared (`duplicate: true`).

One order's trades need no Kite call of their own: the order's audit row names its account, and the
day's trades snapshot holds its fills. The snapshot is only served when it holds every fill the
audit knows of (postbacks and the order sync record Kite's filled quantity); one that is behind is
refreshed first (202), so an order's trades never contradict `GET /orders/{order_id}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web
from pydantic import Field

from ticker.core.contracts import JOB_REFRESH_PORTFOLIO
from ticker.core.portfolio import (
    GROUP_OF_KIND,
    PortfolioSnapshot,
    RefreshGroup,
    RefreshPayload,
    SnapshotKind,
    filled_quantity,
    generation_key,
    order_fills,
    refresh_parts,
    snapshot_key,
)
from ticker.http.accept import accepted, submit
from ticker.http.inputs import QueryBool, Strict, read_query
from ticker.http.middleware.errors import ApiError, json_response, not_found
from ticker.http.routes.orders_api import path_order_id
from ticker.http.state import Services, services
from ticker.infra.orders.order_view import order_view
from ticker.infra.queue.enqueue import derived_job_id

routes = web.RouteTableDef()


class RefreshQuery(Strict):
    refresh: QueryBool = False


class PortfolioQuery(RefreshQuery):
    account_id: str | None = Field(None, min_length=1, max_length=64)


def _query_error(message: str) -> ApiError:
    return ApiError(422, "validation_error", f"account_id: {message}",
                    [{"field": "account_id", "location": "query", "message": message, "type": "account"}])


async def portfolio_account(svc: Services, account_id: str | None) -> str:
    """The account named, or the only one there is; several accounts and none named is a 422 that
    lists them (a portfolio must never be shown for an account the client did not mean)."""
    ids = await svc.refs.account_ids()
    if not ids:
        raise ApiError(503, "no_account", "no Kite account is configured: add one with POST /accounts "
                       "or set KITE_API_KEY")
    if account_id is not None:
        if account_id not in ids:
            raise _query_error(f"unknown account {account_id!r}; accounts: {', '.join(sorted(ids))}")
        return account_id
    if len(ids) > 1:
        raise _query_error(f"required when there are several accounts: {', '.join(sorted(ids))}")
    return next(iter(ids))


async def request_refresh(svc: Services, account_id: str, group: RefreshGroup = "portfolio") -> web.Response:
    """202 with the account's pending refresh job (queued now, or shared when one waits already)."""
    generation = int(await svc.redis.get(generation_key(svc.names, account_id, group)) or 0)
    job_id = derived_job_id(JOB_REFRESH_PORTFOLIO, *refresh_parts(svc.names, account_id, generation, group))
    new = await submit(svc, JOB_REFRESH_PORTFOLIO, RefreshPayload(account_id=account_id, group=group), job_id)
    return accepted(job_id, new, account_id=account_id)


async def stored_snapshot(svc: Services, account_id: str, kind: SnapshotKind) -> PortfolioSnapshot | None:
    raw = await svc.redis.get(snapshot_key(svc.names, account_id, kind))
    return None if raw is None else PortfolioSnapshot.model_validate_json(raw)


def snapshot_body(snapshot: PortfolioSnapshot, **change: object) -> dict[str, object]:
    age = max(0.0, (datetime.now(UTC) - snapshot.as_of).total_seconds())
    return {**snapshot.model_dump(mode="json"), "age_seconds": round(age, 3), **change}


async def snapshot_response(request: web.Request, kind: SnapshotKind) -> web.Response:
    """The account's latest snapshot of `kind`; 202 + its group's refresh job when asked or when none."""
    svc = services(request)
    q = read_query(request, PortfolioQuery)
    account_id = await portfolio_account(svc, q.account_id)
    snapshot = None if q.refresh else await stored_snapshot(svc, account_id, kind)
    if snapshot is None:
        return await request_refresh(svc, account_id, GROUP_OF_KIND[kind])
    return json_response(snapshot_body(snapshot))


# Every snapshot read: path -> the kind it serves (one handler each, made by `_reader`).
SNAPSHOT_READS: dict[str, SnapshotKind] = {
    "/portfolio/positions": "positions", "/portfolio/holdings": "holdings", "/portfolio/margins": "margins",
    "/trades": "trades", "/account/profile": "profile",
    "/mf/instruments": "mf_instruments", "/mf/orders": "mf_orders", "/mf/sips": "mf_sips",
    "/mf/holdings": "mf_holdings",
}


def _reader(kind: SnapshotKind) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def read(request: web.Request) -> web.Response:
        return await snapshot_response(request, kind)

    read.__name__ = f"read_{kind}"
    return read


for _path, _kind in SNAPSHOT_READS.items():
    routes.get(_path)(_reader(_kind))


@routes.get("/orders/{order_id}/trades")
async def order_trades(request: web.Request) -> web.Response:
    """The order's fills from its account's trades snapshot; 404 when no job of ours knows the order."""
    svc = services(request)
    order_id = path_order_id(request)
    q = read_query(request, RefreshQuery)
    view = await order_view(svc.db, order_id)
    if view is None:
        raise not_found("order", order_id)
    snapshot = None if q.refresh else await stored_snapshot(svc, view.account_id, "trades")
    fills = order_fills(snapshot.data, view.order_id) if snapshot else []
    if snapshot is None or filled_quantity(fills) < (view.kite.filled_quantity or 0):
        return await request_refresh(svc, view.account_id)
    return json_response(snapshot_body(snapshot, order_id=view.order_id, data=fills))
