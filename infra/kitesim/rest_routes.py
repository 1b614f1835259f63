"""Kite's REST endpoints: login and session, instruments, history, quotes, orders, portfolio, user.

Handlers are thin: they parse the request, call the state's books, and answer with Kite's
envelope. The version header, authentication, rate limits, counting and faults happen in the
middlewares of app.py. Quotes take up to 500 instruments, LTP and OHLC up to 1,000. GTT triggers,
margins, charges and position conversion are in rest_trading.py.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlencode

import numpy as np
from aiohttp import web

from ticker.core.instruments import is_tradable
from ticker.infra.kitesim.candles import check_request, parse_when
from ticker.infra.kitesim.config import SimAccount
from ticker.infra.kitesim.envelopes import input_error, success
from ticker.infra.kitesim.order_book import kite_time
from ticker.infra.kitesim.order_rules import VARIETIES, parse_modify, parse_place
from ticker.infra.kitesim.sessions import profile_payload
from ticker.infra.kitesim.sim_state import ACCOUNT_KEY, SimState, sim_of

routes = web.RouteTableDef()
QUOTE_LIMIT, LTP_LIMIT = 500, 1000


def _account(request: web.Request) -> SimAccount:
    return request[ACCOUNT_KEY]


# --- login and session -----------------------------------------------------------------------------
@routes.get("/connect/login")
async def connect_login(request: web.Request) -> web.StreamResponse:
    """No UI: answer at once with the redirect a completed login produces."""
    sim = sim_of(request)
    api_key = request.query.get("api_key", "")
    account = sim.auth.require_key(api_key)
    token = sim.auth.issue_request_token(api_key)
    target = account.redirect_url or sim.config.redirect_url or f"{request.url.origin()}/_sim/callback"
    query = urlencode({"action": "login", "type": "login", "status": "success", "request_token": token})
    raise web.HTTPFound(f"{target}{'&' if '?' in target else '?'}{query}")


@routes.post("/session/token")
async def session_token(request: web.Request) -> web.Response:
    form = await request.post()
    data = sim_of(request).auth.exchange(str(form.get("api_key", "")), str(form.get("request_token", "")),
                                         str(form.get("checksum", "")))
    return success(data)


@routes.delete("/session/token")
async def session_delete(request: web.Request) -> web.Response:
    q = request.query
    sim_of(request).auth.invalidate(q.get("api_key", ""), q.get("access_token", ""))
    return success(True)


@routes.post("/api/login")
async def web_login(request: web.Request) -> web.Response:
    form = await request.post()
    user_id = str(form.get("user_id", ""))
    request_id = sim_of(request).auth.password_login(user_id, str(form.get("password", "")))
    return success({"user_id": user_id, "request_id": request_id, "twofa_type": "totp",
                    "twofa_types": ["totp"], "twofa_status": "active", "profile": {}})


@routes.post("/api/twofa")
async def web_twofa(request: web.Request) -> web.Response:
    form = await request.post()
    enctoken = sim_of(request).auth.twofa(str(form.get("user_id", "")), str(form.get("request_id", "")),
                                         str(form.get("twofa_value", "")))
    resp = success({"profile": {}})
    resp.set_cookie("enctoken", enctoken, httponly=True)
    return resp


# --- market data -----------------------------------------------------------------------------------
@routes.get("/instruments")
async def instruments_all(request: web.Request) -> web.Response:
    # The first full-profile dump takes about a second to format: off the event loop.
    return _csv(request, await asyncio.to_thread(sim_of(request).instruments_csv, None))


@routes.get("/instruments/{exchange}")
async def instruments_exchange(request: web.Request) -> web.Response:
    exchange = request.match_info["exchange"].upper()
    return _csv(request, await asyncio.to_thread(sim_of(request).instruments_csv, exchange))


def _csv(request: web.Request, text: str) -> web.Response:
    resp = web.Response(text=text, content_type="text/csv")
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        resp.enable_compression()
    return resp


@routes.get("/instruments/historical/{token}/{interval}")
async def historical(request: web.Request) -> web.Response:
    sim = sim_of(request)
    try:
        token = int(request.match_info["token"])
    except ValueError:
        raise input_error("Invalid `instrument_token`.") from None
    row = sim.universe.row_of(token)
    if row < 0:
        raise input_error("Invalid `instrument_token`.")
    interval = request.match_info["interval"]
    q = request.query
    start, end = parse_when(q.get("from"), "from"), parse_when(q.get("to"), "to")
    check_request(interval, start, end)
    for flag in ("oi", "continuous"):
        if q.get(flag, "0") not in ("0", "1", "true", "false"):
            raise input_error(f"Invalid `{flag}`: use 0 or 1.")
    candles = sim.history.candles(row, interval, start, end, q.get("oi") in ("1", "true"), time.time())
    return success({"candles": candles})


def _resolve(sim: SimState, keys: list[str], limit: int) -> list[tuple[str, int]]:
    """`i` values (EXCHANGE:TRADINGSYMBOL or an instrument token) -> (key, row), unknown omitted."""
    if not keys:
        raise input_error("No instruments given: pass one or more `i` parameters.")
    if len(keys) > limit:
        raise input_error(f"Too many instruments: at most {limit} per request.")
    out = []
    for key in keys:
        if key.isdigit():
            row = sim.universe.row_of(int(key))
        else:
            exchange, _, symbol = key.partition(":")
            row = sim.universe.row_of_symbol.get((exchange, symbol), -1)
        if row >= 0:
            out.append((key, row))
    return out


@routes.get("/quote")
async def quote(request: web.Request) -> web.Response:
    sim = sim_of(request)
    found = _resolve(sim, request.query.getall("i", []), QUOTE_LIMIT)
    return success({key: quote_payload(sim, row) for key, row in found})


@routes.get("/quote/ohlc")
async def quote_ohlc(request: web.Request) -> web.Response:
    sim = sim_of(request)
    found = _resolve(sim, request.query.getall("i", []), LTP_LIMIT)
    out = {}
    for key, row in found:
        q = quote_payload(sim, row)
        out[key] = {"instrument_token": q["instrument_token"], "last_price": q["last_price"], "ohlc": q["ohlc"]}
    return success(out)


@routes.get("/quote/ltp")
async def quote_ltp(request: web.Request) -> web.Response:
    sim = sim_of(request)
    found = _resolve(sim, request.query.getall("i", []), LTP_LIMIT)
    rows = np.array([row for _, row in found], dtype=np.int64)
    prices = sim.market.price_rows(rows) if len(rows) else np.empty(0)
    return success({key: {"instrument_token": int(sim.universe.token[row]), "last_price": float(p)}
                    for (key, row), p in zip(found, prices, strict=True)})


# --- orders ----------------------------------------------------------------------------------------
@routes.post("/orders/{variety}")
async def place_order(request: web.Request) -> web.Response:
    sim, account = sim_of(request), _account(request)
    form = {k: str(v) for k, v in (await request.post()).items()}
    req = parse_place(request.match_info["variety"], form)
    data, created = sim.orders.submit(account.api_key, account.user_id, req)
    for order in created:
        sim.counters.order_created(account.api_key, req.tag, order.placed_at)
    return success(data)


@routes.put("/orders/{variety}/{order_id}")
async def modify_order(request: web.Request) -> web.Response:
    sim, account = sim_of(request), _account(request)
    form = {k: str(v) for k, v in (await request.post()).items()}
    variety = request.match_info["variety"]
    m = parse_modify(variety, form)
    order = sim.orders.modify(account.api_key, request.match_info["order_id"], m, variety=variety)
    return success({"order_id": order.order_id})


@routes.delete("/orders/{variety}/{order_id}")
async def cancel_order(request: web.Request) -> web.Response:
    sim, account = sim_of(request), _account(request)
    variety = request.match_info["variety"]
    if variety not in VARIETIES:
        raise input_error(f"Invalid `variety`. Allowed: {', '.join(VARIETIES)}.")
    order = sim.orders.cancel(account.api_key, request.match_info["order_id"], variety=variety)
    return success({"order_id": order.order_id})


@routes.get("/orders")
async def list_orders(request: web.Request) -> web.Response:
    return success(sim_of(request).orders.orders_of(_account(request).api_key))


@routes.get("/orders/{order_id}")
async def order_history(request: web.Request) -> web.Response:
    order = sim_of(request).orders.get(_account(request).api_key, request.match_info["order_id"])
    return success(order.history)


@routes.get("/orders/{order_id}/trades")
async def order_trades(request: web.Request) -> web.Response:
    sim, account = sim_of(request), _account(request)
    order = sim.orders.get(account.api_key, request.match_info["order_id"])
    return success(sim.orders.trades_of(account.api_key, order.order_id))


@routes.get("/trades")
async def trades(request: web.Request) -> web.Response:
    return success(sim_of(request).orders.trades_of(_account(request).api_key))


# --- portfolio and user ----------------------------------------------------------------------------
@routes.get("/portfolio/positions")
async def positions(request: web.Request) -> web.Response:
    return success(sim_of(request).orders.positions_of(_account(request).api_key))


@routes.get("/portfolio/holdings")
async def holdings(request: web.Request) -> web.Response:
    return success([])


@routes.get("/user/profile")
async def profile(request: web.Request) -> web.Response:
    return success(profile_payload(_account(request)))


@routes.get("/user/margins")
async def margins(request: web.Request) -> web.Response:
    sim, account = sim_of(request), _account(request)
    return success(sim.margins(account.api_key))


@routes.get("/user/margins/{segment}")
async def margins_segment(request: web.Request) -> web.Response:
    sim, account = sim_of(request), _account(request)
    segment = request.match_info["segment"]
    all_margins = sim.margins(account.api_key)
    if segment not in all_margins:
        raise input_error("Invalid segment. Allowed: equity, commodity.")
    return success(all_margins[segment])


def quote_payload(sim: SimState, row: int) -> dict:
    """Kite's full quote for one instrument from the market's current state."""
    m, uni = sim.market, sim.universe
    ltp = float(m.price_rows(np.array([row]))[0])
    depth = m.depth(np.array([row]))
    token = int(uni.token[row])
    levels = {side: [{"price": float(depth[f"depth_{side}_price"][0, i]),
                      "quantity": int(depth[f"depth_{side}_quantity"][0, i]),
                      "orders": int(depth[f"depth_{side}_orders"][0, i])} for i in range(5)]
              for side in ("buy", "sell")}
    if not is_tradable(token):
        levels = {"buy": [], "sell": []}
    close = float(m.prev_close[row])
    return {
        "instrument_token": token, "timestamp": kite_time(time.time()),
        "last_trade_time": kite_time(float(m.last_trade_time[row])), "last_price": ltp,
        "last_quantity": int(m.last_qty[row]), "buy_quantity": sum(d["quantity"] for d in levels["buy"]) * 7,
        "sell_quantity": sum(d["quantity"] for d in levels["sell"]) * 7, "volume": int(m.volume[row]),
        "average_price": round(float(m.avg_price[row]), 2), "oi": int(m.oi[row]),
        "oi_day_high": int(m.oi_high[row]), "oi_day_low": int(m.oi_low[row]),
        "net_change": round(ltp - close, 2),
        "lower_circuit_limit": round(close * 0.6, 2) if close else 0.0,
        "upper_circuit_limit": round(close * 1.4, 2) if close else 0.0,
        "ohlc": {"open": float(m.open[row]), "high": float(max(m.high[row], ltp)),
                 "low": float(min(m.low[row], ltp)), "close": close},
        "depth": levels,
    }
