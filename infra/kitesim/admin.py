"""The stand-in's admin API, JSON under `/_sim/` (no Kite auth; never faulted or counted).

    GET    /_sim/health                {"status": "ok"} once the stand-in serves
    GET    /_sim/state                 configuration, accounts, live connections, faults, tick rates, spots
    GET    /_sim/accounts              every account with its secrets and live access tokens
    GET    /_sim/counters              what the sim received: requests per route ("GET /quote") and per
                                       route and source address (requests_by_source: "POST /orders/{variety}
                                       from 127.0.0.2"),
                                       orders_by_tag, orders_per_account (epoch times of created orders),
                                       max_orders_per_second, order_attempts, rate_limited (placements
                                       refused, by api_key), rate_limited_by_route / rate_limited_by_user
                                       (every 429 Kite's rate limits gave, by "METHOD /route" and by user
                                       id; injected 429 faults are not in them), ws_accepted, ws_refused,
                                       subscribe_messages, tokens_refused, frames/ticks sent
    GET    /_sim/orders?tag=T          orders (all accounts) carrying tag T
    POST   /_sim/reset                 counters, faults, tick rates, stalls, rate limits -> configured
    GET    /_sim/faults                current fault rules, latency, error rate, how often each fired
    POST   /_sim/faults                add a rule {"route": "POST /orders/*", "kind": "503", "rate": 1.0,
                                       "times": 2, "delay_ms": null}; kinds: 429 500 502 503 data_error
                                       timeout drop accept_timeout accept_drop latency (see faults.py)
    DELETE /_sim/faults                remove every rule
    POST   /_sim/latency               {"latency_ms": 50, "error_rate": 0.1} for every REST route
    POST   /_sim/order_rate_limit      {"per_second": 10} Kite's order placement limit; 0 disables
    GET    /_sim/rate_limits           Kite's per-user limits in force (see limits.py)
    POST   /_sim/rate_limits           change some: {"enabled": false} or {"quote_per_second": 1,
                                       "orders_per_minute": 400, ...}; 0 switches one window off
    GET    /_sim/postbacks             HTTP postback delivery: queued, sent, failed, dropped
    POST   /_sim/postbacks/send        {"update": {"order_id": "..", "order_timestamp": "..", "status":
                                       "COMPLETE", ...}, "api_key": null (first account), "checksum": null,
                                       "ws": true, "http": true} send an order update as Kite would: signed
                                       with the account's api_secret, or with `checksum` instead (a forged
                                       one), over its ticker connections and/or to its postback URL
                                       (HTTP only for COMPLETE, CANCELLED, REJECTED, UPDATE)
    POST   /_sim/postbacks/url         {"url": "http://.../kite/postback" | null, "api_key": null (every
                                       account)} where HTTP postbacks go from now on
    GET    /_sim/order_ip_allowlist    {"ips": [...], "refused": {address: count}}: the static IPs order
                                       requests must come from (empty: any address)
    POST   /_sim/order_ip_allowlist    {"ips": ["127.0.0.2"]} set them ([] lifts the rule); order calls
                                       (place/modify/cancel, GTT writes) from elsewhere get 403
                                       PermissionException
    POST   /_sim/tokens/expire         {"api_key": "sim_api_key" | null (all), "drop_connections": true}
    GET    /_sim/ws/connections        live ticker connections: id, api_key, subscriptions, modes, stalled
    POST   /_sim/ws/drop               {"connection_id": 3 | null, "api_key": null} drop one / all
    POST   /_sim/ws/drop_every         {"seconds": 5} drop all connections every N s (null stops)
    POST   /_sim/ws/refuse             {"api_key": null (each), "times": 1, "drop_connections": true} refuse
                                       the next ticker handshakes with 403 though the token is good
    POST   /_sim/ws/stall              {"connection_id": 3 | null, "api_key": null, "stalled": true}
                                       open but silent: no ticks, heartbeats, postbacks or pongs
    POST   /_sim/ws/inject             {"frame_hex": "0001...", "times": 1, "interval_ms": 0} send these
                                       exact bytes as a binary frame on every open, unstalled ticker
                                       connection, `times` rounds (1..10000) `interval_ms` apart
                                       (0..60000, at most 120 s in all); answers when done with
                                       {"connections", "frames_sent", "times", "interval_ms", "bytes"}.
                                       Bad input: 400 {"error": {"code", "message", "details"}}
    POST   /_sim/ticks                 {"tick_interval_ms": 100, "tick_rate": 2.0, "ticks_per_second":
                                       300000, "rate_by_token": {"256265": 5}, "clear": false,
                                       "tick_phases": "staggered" | "aligned"} (each connection's frames
                                       at its own phase of the interval, or every one at the same instant)
    POST   /_sim/price                 {"instrument_token": 123 | "exchange": "NFO", "tradingsymbol": "...",
                                       "last_price": 250.5} move an instrument to that price now: its
                                       underlying's spot is solved for, so the whole chain moves with
                                       it (ticks, quotes, order matching, GTT triggers); answers the
                                       price reached (to the tick), the underlying and its new spot
    GET    /_sim/callback              default login redirect target: echoes its query as JSON

Mutual funds have theirs beside their Kite routes (mf_routes.py): `GET /_sim/mf` (every MF order and
SIP, the NAVs) and `POST /_sim/mf/nav` (publish the next NAV: open orders complete at it).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ticker.infra.kitesim.config import TickPhases
from ticker.infra.kitesim.envelopes import KiteError
from ticker.infra.kitesim.faults import RouteFault
from ticker.infra.kitesim.sim_state import sim_of

routes = web.RouteTableDef()


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_Body):
    connection_id: int | None = None
    api_key: str | None = None
    stalled: bool = True


class Expire(_Body):
    api_key: str | None = None
    drop_connections: bool = True


class Refuse(_Body):
    api_key: str | None = None
    times: int = Field(1, ge=1, le=10_000)
    drop_connections: bool = True


class Latency(_Body):
    latency_ms: float | None = Field(None, ge=0, le=600_000)
    error_rate: float | None = Field(None, ge=0, le=1)


class InjectTicks(_Body):
    tick_interval_ms: float | None = Field(None, ge=1, le=60_000)
    tick_rate: float | None = Field(None, gt=0)
    ticks_per_second: float | None = Field(None, gt=0)
    rate_by_token: dict[int, float] | None = None
    clear: bool = False
    tick_phases: TickPhases | None = None


class Every(_Body):
    seconds: float | None = Field(None, gt=0)


class RateLimit(_Body):
    per_second: int = Field(ge=0)


class PriceMove(_Body):
    instrument_token: int | None = None
    exchange: str | None = None
    tradingsymbol: str | None = None
    last_price: float = Field(gt=0, allow_inf_nan=False)


MAX_INJECT_BYTES = 1024 * 1024
MAX_INJECT_TIMES = 10_000
MAX_INJECT_INTERVAL_MS = 60_000
MAX_INJECT_SPAN_MS = 120_000  # the request answers when every round is sent


class PostbackSend(_Body):
    update: dict[str, Any]
    api_key: str | None = None
    checksum: str | None = None
    ws: bool = True
    http: bool = True


class PostbackUrl(_Body):
    url: str | None = Field(None, max_length=2048, pattern=r"^https?://")
    api_key: str | None = None


class IpList(_Body):
    ips: list[str] = Field(max_length=64)


class Inject(_Body):
    frame_hex: str = Field(min_length=1, max_length=2 * MAX_INJECT_BYTES)
    times: int = Field(1, ge=1, le=MAX_INJECT_TIMES, strict=True)
    interval_ms: float = Field(0.0, ge=0, le=MAX_INJECT_INTERVAL_MS, strict=True)

    def frame(self) -> bytes:
        try:
            frame = bytes.fromhex(self.frame_hex)
        except ValueError:
            raise ValueError("frame_hex must be hexadecimal digits, two per byte") from None
        if not frame:
            raise ValueError("frame_hex holds no bytes")
        return frame


def invalid(message: str, details: list[dict] | None = None) -> web.Response:
    """400 in the project's error envelope."""
    return ok({"error": {"code": "invalid_request", "message": message, "details": details or []}}, status=400)


class Limits(_Body):
    enabled: bool | None = None
    orders_per_second: int | None = Field(None, ge=0)
    orders_per_minute: int | None = Field(None, ge=0)
    orders_per_day: int | None = Field(None, ge=0)
    quote_per_second: int | None = Field(None, ge=0)
    historical_per_second: int | None = Field(None, ge=0)
    api_per_second: int | None = Field(None, ge=0)


def ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])), "error": e["msg"]} for e in exc.errors()]
        raise web.HTTPBadRequest(text=orjson.dumps({"error": "invalid body", "details": errors}).decode(),
                                 content_type="application/json") from None


@routes.get("/_sim/health")
async def health(request: web.Request) -> web.Response:
    return ok({"status": "ok", "instruments": len(sim_of(request).universe)})


@routes.get("/_sim/state")
async def state(request: web.Request) -> web.Response:
    return ok(sim_of(request).describe())


@routes.get("/_sim/accounts")
async def accounts(request: web.Request) -> web.Response:
    sim = sim_of(request)
    return ok([{**a.model_dump(), "live_tokens": sim.auth.live_tokens(a.api_key)} for a in sim.accounts])


@routes.get("/_sim/counters")
async def counters(request: web.Request) -> web.Response:
    return ok(sim_of(request).counters.snapshot())


@routes.get("/_sim/orders")
async def orders(request: web.Request) -> web.Response:
    return ok(sim_of(request).orders_with_tag(request.query.get("tag", "")))


@routes.post("/_sim/reset")
async def reset(request: web.Request) -> web.Response:
    sim_of(request).reset()
    return ok({"reset": True})


@routes.get("/_sim/faults")
async def faults(request: web.Request) -> web.Response:
    return ok(sim_of(request).faults.describe())


@routes.post("/_sim/faults")
async def add_fault(request: web.Request) -> web.Response:
    rule = await _body(request, RouteFault)
    try:
        sim_of(request).faults.add(rule)
    except ValueError as exc:
        return ok({"error": str(exc)}, status=400)
    return ok(rule.model_dump(), status=201)


@routes.delete("/_sim/faults")
async def clear_faults(request: web.Request) -> web.Response:
    sim_of(request).faults.rules.clear()
    return ok({"rules": 0})


@routes.post("/_sim/latency")
async def latency(request: web.Request) -> web.Response:
    body = await _body(request, Latency)
    sim_of(request).set_latency(body.latency_ms, body.error_rate)
    return ok(sim_of(request).faults.describe())


@routes.post("/_sim/order_rate_limit")
async def order_rate_limit(request: web.Request) -> web.Response:
    body = await _body(request, RateLimit)
    sim_of(request).set_order_rate_limit(body.per_second)
    return ok({"per_second": body.per_second})


@routes.get("/_sim/rate_limits")
async def rate_limits(request: web.Request) -> web.Response:
    return ok(sim_of(request).limits.describe())


@routes.post("/_sim/rate_limits")
async def set_rate_limits(request: web.Request) -> web.Response:
    body = await _body(request, Limits)
    updated = sim_of(request).set_limits(**body.model_dump(exclude_none=True))
    return ok(updated.__dict__)


@routes.get("/_sim/postbacks")
async def postbacks(request: web.Request) -> web.Response:
    return ok(sim_of(request).postbacks.describe())


@routes.post("/_sim/postbacks/send")
async def send_postback(request: web.Request) -> web.Response:
    body = await _body(request, PostbackSend)
    if not body.update.get("order_id") or not body.update.get("order_timestamp"):
        return invalid("update needs order_id and order_timestamp",
                       [{"field": "update", "error": "order_id and order_timestamp are required"}])
    sim = sim_of(request)
    if body.api_key is not None and body.api_key not in sim.auth.accounts:
        return ok({"error": f"unknown api_key {body.api_key!r}"}, status=404)
    return ok(sim.send_postback(body.update, body.api_key, body.checksum, body.ws, body.http))


@routes.post("/_sim/postbacks/url")
async def postback_url(request: web.Request) -> web.Response:
    body = await _body(request, PostbackUrl)
    sim = sim_of(request)
    if body.api_key is not None and body.api_key not in sim.auth.accounts:
        return ok({"error": f"unknown api_key {body.api_key!r}"}, status=404)
    return ok({"accounts": sim.set_postback_url(body.url, body.api_key), "url": body.url})


@routes.get("/_sim/order_ip_allowlist")
async def order_ip_allowlist(request: web.Request) -> web.Response:
    return ok(sim_of(request).order_ips.describe())


@routes.post("/_sim/order_ip_allowlist")
async def set_order_ip_allowlist(request: web.Request) -> web.Response:
    body = await _body(request, IpList)
    try:
        sim_of(request).order_ips.set(body.ips)
    except ValueError as exc:
        return invalid(str(exc), [{"field": "ips", "error": str(exc)}])
    return ok(sim_of(request).order_ips.describe())


@routes.post("/_sim/tokens/expire")
async def expire(request: web.Request) -> web.Response:
    body = await _body(request, Expire)
    sim = sim_of(request)
    if body.api_key is not None and body.api_key not in sim.auth.accounts:
        return ok({"error": f"unknown api_key {body.api_key!r}"}, status=404)
    return ok({"expired": sim.expire_tokens(body.api_key, body.drop_connections)})


@routes.get("/_sim/ws/connections")
async def connections(request: web.Request) -> web.Response:
    return ok([c.describe() for c in sim_of(request).connections()])


@routes.post("/_sim/ws/drop")
async def drop(request: web.Request) -> web.Response:
    body = await _body(request, Target)
    return ok({"dropped": sim_of(request).drop(body.connection_id, body.api_key)})


@routes.post("/_sim/ws/drop_every")
async def drop_every(request: web.Request) -> web.Response:
    body = await _body(request, Every)
    sim_of(request).drop_every(body.seconds)
    return ok({"seconds": body.seconds})


@routes.post("/_sim/ws/refuse")
async def refuse(request: web.Request) -> web.Response:
    body = await _body(request, Refuse)
    sim = sim_of(request)
    if body.api_key is not None and body.api_key not in sim.auth.accounts:
        return ok({"error": f"unknown api_key {body.api_key!r}"}, status=404)
    return ok({"refusing": sim.refuse_handshakes(body.api_key, body.times, body.drop_connections)})


@routes.post("/_sim/ws/stall")
async def stall(request: web.Request) -> web.Response:
    body = await _body(request, Target)
    return ok({"stalled" if body.stalled else "resumed":
               sim_of(request).stall(body.connection_id, body.api_key, body.stalled)})


@routes.post("/_sim/ws/inject")
async def inject(request: web.Request) -> web.Response:
    try:
        body = Inject.model_validate_json(await request.read() or b"{}")
    except ValidationError as exc:
        details = [{"field": ".".join(map(str, e["loc"])) or "body", "error": e["msg"]} for e in exc.errors()]
        return invalid("invalid inject request: " + "; ".join(f"{d['field']}: {d['error']}" for d in details),
                       details)
    try:
        frame = body.frame()
    except ValueError as exc:
        return invalid(str(exc), [{"field": "frame_hex", "error": str(exc)}])
    if (body.times - 1) * body.interval_ms > MAX_INJECT_SPAN_MS:
        message = f"times x interval_ms must stay within {MAX_INJECT_SPAN_MS} ms"
        return invalid(message, [{"field": "interval_ms", "error": message}])
    return ok(await sim_of(request).inject(frame, body.times, body.interval_ms))


@routes.post("/_sim/ticks")
async def ticks(request: web.Request) -> web.Response:
    body = await _body(request, InjectTicks)
    sim = sim_of(request)
    sim.set_ticks(interval_ms=body.tick_interval_ms, tick_rate=body.tick_rate,
                  ticks_per_second=body.ticks_per_second, per_token=body.rate_by_token, clear=body.clear,
                  phases=body.tick_phases)
    return ok(sim.engine.describe())


@routes.post("/_sim/price")
async def price(request: web.Request) -> web.Response:
    body = await _body(request, PriceMove)
    sim = sim_of(request)
    if body.instrument_token is not None:
        row = sim.universe.row_of(body.instrument_token)
    else:
        row = sim.universe.row_of_symbol.get((body.exchange or "", body.tradingsymbol or ""), -1)
    if row < 0:
        return ok({"error": "unknown instrument: give instrument_token or exchange and tradingsymbol"},
                  status=404)
    try:
        reached = sim.set_price(row, body.last_price)
    except KiteError as exc:
        return ok({"error": exc.message}, status=400)
    und = sim.universe.underlyings[int(sim.universe.und[row])]
    return ok({"instrument_token": int(sim.universe.token[row]), "exchange": sim.universe.exchange_of(row),
               "tradingsymbol": str(sim.universe.symbol[row]), "last_price": reached,
               "underlying": und.name, "spot": float(sim.market.spots[int(sim.universe.und[row])])})


@routes.get("/_sim/callback")
async def callback(request: web.Request) -> web.Response:
    return ok(dict(request.query))
