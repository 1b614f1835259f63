"""Kite's mutual-fund endpoints, and the admin API that publishes a NAV.

    GET    /mf/instruments          CSV of the funds (tradingsymbol is the ISIN)
    POST   /mf/orders               place (form: tradingsymbol, transaction_type, amount | quantity, tag)
                                    -> {"order_id"}
    DELETE /mf/orders/{order_id}    cancel an OPEN order                      -> {"order_id"}
    GET    /mf/orders               the account's MF orders, newest first
    GET    /mf/orders/{order_id}    one order
    POST   /mf/sips                 register (form: tradingsymbol, amount, instalments, frequency,
                                    instalment_day, initial_amount, tag)      -> {"sip_id"}
    PUT    /mf/sips/{sip_id}        modify (amount, status, instalments, frequency, instalment_day)
    DELETE /mf/sips/{sip_id}        cancel                                    -> {"sip_id"}
    GET    /mf/sips                 the account's SIPs;  GET /mf/sips/{sip_id}  one
    GET    /mf/holdings             units held per fund

    GET    /_sim/mf                 NAV date, NAVs, every MF order and SIP (all accounts)
    POST   /_sim/mf/nav             {"navs": {"INF...": 55.5}, "date": "2026-01-02"} publish the next
                                    NAV (both optional): OPEN orders complete at it, due SIP
                                    instalments are placed; answers what happened

The rules live in mf_book.py; handlers stay thin as in rest_routes.py.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ticker.infra.kitesim.admin import ok
from ticker.infra.kitesim.envelopes import KiteError, success
from ticker.infra.kitesim.sim_state import ACCOUNT_KEY, sim_of

routes = web.RouteTableDef()


async def _form(request: web.Request) -> dict[str, str]:
    return {k: str(v) for k, v in (await request.post()).items()}


@routes.get("/mf/instruments")
async def instruments(request: web.Request) -> web.Response:
    return web.Response(text=sim_of(request).mf.instruments_csv(), content_type="text/csv")


@routes.post("/mf/orders")
async def place(request: web.Request) -> web.Response:
    account = request[ACCOUNT_KEY]
    order = sim_of(request).mf.place(account.api_key, account.user_id, await _form(request))
    return success({"order_id": order.order_id})


@routes.delete("/mf/orders/{order_id}")
async def cancel(request: web.Request) -> web.Response:
    order = sim_of(request).mf.cancel(request[ACCOUNT_KEY].api_key, request.match_info["order_id"])
    return success({"order_id": order.order_id})


@routes.get("/mf/orders")
async def orders(request: web.Request) -> web.Response:
    return success(sim_of(request).mf.orders_of(request[ACCOUNT_KEY].api_key))


@routes.get("/mf/orders/{order_id}")
async def order(request: web.Request) -> web.Response:
    book = sim_of(request).mf
    return success(book.order_json(book.get(request[ACCOUNT_KEY].api_key, request.match_info["order_id"])))


@routes.post("/mf/sips")
async def place_sip(request: web.Request) -> web.Response:
    account = request[ACCOUNT_KEY]
    sip = sim_of(request).mf.place_sip(account.api_key, account.user_id, await _form(request))
    return success({"sip_id": sip.sip_id})


@routes.put("/mf/sips/{sip_id}")
async def modify_sip(request: web.Request) -> web.Response:
    book, api_key = sim_of(request).mf, request[ACCOUNT_KEY].api_key
    book.get_sip(api_key, request.match_info["sip_id"])  # an unknown id is a 404 before the body
    sip = book.modify_sip(api_key, request.match_info["sip_id"], await _form(request))
    return success({"sip_id": sip.sip_id})


@routes.delete("/mf/sips/{sip_id}")
async def cancel_sip(request: web.Request) -> web.Response:
    sip = sim_of(request).mf.cancel_sip(request[ACCOUNT_KEY].api_key, request.match_info["sip_id"])
    return success({"sip_id": sip.sip_id})


@routes.get("/mf/sips")
async def sips(request: web.Request) -> web.Response:
    return success(sim_of(request).mf.sips_of(request[ACCOUNT_KEY].api_key))


@routes.get("/mf/sips/{sip_id}")
async def sip(request: web.Request) -> web.Response:
    book = sim_of(request).mf
    return success(book.sip_json(book.get_sip(request[ACCOUNT_KEY].api_key, request.match_info["sip_id"])))


@routes.get("/mf/holdings")
async def holdings(request: web.Request) -> web.Response:
    return success(sim_of(request).mf.holdings_of(request[ACCOUNT_KEY].api_key))


# --- admin -----------------------------------------------------------------------------------------
class NavPublish(BaseModel):
    model_config = ConfigDict(extra="forbid")

    navs: dict[str, float] = Field(default_factory=dict)
    date: dt.date | None = None


@routes.get("/_sim/mf")
async def describe(request: web.Request) -> web.Response:
    return ok(sim_of(request).mf.describe())


@routes.post("/_sim/mf/nav")
async def publish_nav(request: web.Request) -> web.Response:
    raw = await request.read()
    try:
        body = NavPublish.model_validate_json(raw or b"{}")
    except ValueError as exc:
        return ok({"error": str(exc)}, status=400)
    if any(not v > 0 for v in body.navs.values()):
        return ok({"error": "every NAV must be greater than 0"}, status=400)
    try:
        return ok(sim_of(request).mf.publish_nav(body.navs, body.date))
    except KiteError as exc:
        return ok({"error": exc.message}, status=400)
