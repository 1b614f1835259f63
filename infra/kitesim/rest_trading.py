"""Kite's REST endpoints for GTT triggers, margin calculation, charges and position conversion.

    POST   /gtt/triggers            place a GTT (form: type, condition, orders)  -> {"trigger_id"}
    GET    /gtt/triggers            the account's GTTs, newest first
    GET    /gtt/triggers/{id}       one GTT
    PUT    /gtt/triggers/{id}       modify an active GTT (same form as placing)  -> {"trigger_id"}
    DELETE /gtt/triggers/{id}       delete an active GTT                         -> {"trigger_id"}
    POST   /margins/orders          JSON array of orders -> margins per order (?mode=compact)
    POST   /margins/basket          JSON array -> initial, final, orders, charges
                                    (?consider_positions=true|false, ?mode=compact)
    POST   /charges/orders          JSON array of executed orders -> charges per order
    PUT    /portfolio/positions     convert a position's product (form)          -> true

Handlers are thin, as in rest.py: the books live in gtt.py, margins.py, charges.py, portfolio.py.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from ticker.infra.kitesim.charges import contract_note
from ticker.infra.kitesim.envelopes import input_error, success
from ticker.infra.kitesim.gtt_rules import parse_gtt
from ticker.infra.kitesim.margin_calc import parse_legs
from ticker.infra.kitesim.portfolio_book import convert_position
from ticker.infra.kitesim.sim_state import ACCOUNT_KEY, sim_of

routes = web.RouteTableDef()


async def _form(request: web.Request) -> dict[str, str]:
    return {k: str(v) for k, v in (await request.post()).items()}


async def _json_body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise input_error("The request body must be JSON (Content-Type: application/json).") from None


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false", "1", "0"):
        raise input_error(f"Invalid `{name}`: use true or false.")
    return raw in ("true", "1")


def _compact(request: web.Request) -> bool:
    mode = request.query.get("mode", "")
    if mode not in ("", "compact"):
        raise input_error("Invalid `mode`. Allowed: compact.")
    return mode == "compact"


# --- GTT -------------------------------------------------------------------------------------------
@routes.post("/gtt/triggers")
async def gtt_place(request: web.Request) -> web.Response:
    sim, account = sim_of(request), request[ACCOUNT_KEY]
    spec = parse_gtt(await _form(request), sim.universe)
    gtt = sim.gtts.place(account.api_key, account.user_id, spec)
    return success({"trigger_id": gtt.id})


@routes.get("/gtt/triggers")
async def gtt_list(request: web.Request) -> web.Response:
    return success(sim_of(request).gtts.of_account(request[ACCOUNT_KEY].api_key))


@routes.get("/gtt/triggers/{trigger_id}")
async def gtt_info(request: web.Request) -> web.Response:
    gtt = sim_of(request).gtts.get(request[ACCOUNT_KEY].api_key, request.match_info["trigger_id"])
    return success(gtt.as_kite())


@routes.put("/gtt/triggers/{trigger_id}")
async def gtt_modify(request: web.Request) -> web.Response:
    sim, api_key = sim_of(request), request[ACCOUNT_KEY].api_key
    sim.gtts.get(api_key, request.match_info["trigger_id"])  # an unknown id is a 404 before the body
    spec = parse_gtt(await _form(request), sim.universe)
    gtt = sim.gtts.modify(api_key, request.match_info["trigger_id"], spec)
    return success({"trigger_id": gtt.id})


@routes.delete("/gtt/triggers/{trigger_id}")
async def gtt_delete(request: web.Request) -> web.Response:
    gtt = sim_of(request).gtts.delete(request[ACCOUNT_KEY].api_key, request.match_info["trigger_id"])
    return success({"trigger_id": gtt.id})


# --- margins and charges ---------------------------------------------------------------------------
@routes.post("/margins/orders")
async def order_margins(request: web.Request) -> web.Response:
    sim, now = sim_of(request), time.time()
    compact = _compact(request)
    legs = parse_legs(sim.market, await _json_body(request), now)
    return success(sim.margin_model.order_margins(request[ACCOUNT_KEY].api_key, legs, now, compact))


@routes.post("/margins/basket")
async def basket_margins(request: web.Request) -> web.Response:
    sim, now = sim_of(request), time.time()
    compact, consider = _compact(request), _flag(request, "consider_positions", False)
    legs = parse_legs(sim.market, await _json_body(request), now)
    return success(sim.margin_model.basket(request[ACCOUNT_KEY].api_key, legs, now, consider, compact))


@routes.post("/charges/orders")
async def charges(request: web.Request) -> web.Response:
    return success(contract_note(sim_of(request).universe, await _json_body(request)))


# --- portfolio -------------------------------------------------------------------------------------
@routes.put("/portfolio/positions")
async def convert(request: web.Request) -> web.Response:
    convert_position(sim_of(request).orders, request[ACCOUNT_KEY].api_key, await _form(request))
    return success(True)
