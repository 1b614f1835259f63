"""Option chains from the latest ticks: `GET /chain` (one expiry's rows and analytics) and
`GET /chain/expiries` (what expiries an underlying has). See `ticker.http.chain_view`."""

from __future__ import annotations

import time
from datetime import datetime

from aiohttp import web
from pydantic import Field

from ticker.core.clock import IST
from ticker.http.chain_view import CHAIN_READER, Sources
from ticker.http.inputs import QueryDate, Strict, read_query
from ticker.http.middleware.errors import json_response
from ticker.http.state import services

routes = web.RouteTableDef()

Underlying = Field(min_length=1, max_length=64, pattern=r"^[A-Z0-9&_\-]+$",
                   description="what the options are written on, as Kite names it (NIFTY, BANKNIFTY, INFY)")


class ChainQuery(Strict):
    underlying: str = Underlying
    expiry: QueryDate | None = None


class ExpiriesQuery(Strict):
    underlying: str = Underlying


def _sources(request: web.Request) -> Sources:
    svc = services(request)
    return Sources(svc.db, svc.tick_pipe, svc.names)


@routes.get("/chain")
async def get_chain(request: web.Request) -> web.Response:
    q = read_query(request, ChainQuery)
    doc = await request.app[CHAIN_READER].snapshot(_sources(request), q.underlying, q.expiry)
    return json_response(doc)


@routes.get("/chain/expiries")
async def get_expiries(request: web.Request) -> web.Response:
    q = read_query(request, ExpiriesQuery)
    today = datetime.fromtimestamp(time.time(), IST).date()
    expiries = await request.app[CHAIN_READER].expiries(_sources(request), q.underlying, today)
    return json_response({"underlying": q.underlying, "expiries": [e.isoformat() for e in expiries]})
