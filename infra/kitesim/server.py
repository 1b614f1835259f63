"""The stand-in as an aiohttp application, and `running_sim` to serve it from tests.

Request path through the middlewares: Kite's error envelope (outermost) -> count the route and
apply injected faults -> require `X-Kite-Version: 3` (400 InputException without it, as Kite)
-> authenticate (`Authorization: token api_key:access_token`) -> the static-IP rule for order
routes (ipallow.py: 403 PermissionException) -> Kite's per-user rate limits (limits.py: 429
NetworkException "Too many requests") -> handler. The admin API (`/_sim/`) and
the ticker WebSocket (`/ws`) bypass all of it; the browser login pages need no version header.

The server accepts request lines and header fields up to `MAX_LINE_BYTES`, enough for a quote of
500 or an LTP of 1,000 instruments in the query string.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ticker.infra.kitesim import admin, mf_routes, rest_routes, rest_trading
from ticker.infra.kitesim.api_limits import bucket_of
from ticker.infra.kitesim.config import SimAccount, SimConfig
from ticker.infra.kitesim.envelopes import KiteError, input_error, kite_errors, too_many_requests
from ticker.infra.kitesim.faults import Decision, status_error
from ticker.infra.kitesim.sim_state import ACCOUNT_KEY, SIM_KEY, SimState, sim_of

log = logging.getLogger(__name__)
PUBLIC_PATHS = frozenset({"/connect/login", "/session/token", "/api/login", "/api/twofa"})
VERSIONLESS_PATHS = frozenset({"/connect/login", "/api/login", "/api/twofa"})  # browser pages
KITE_VERSION = "3"
MAX_LINE_BYTES = 128 * 1024


def route_key(request: web.Request) -> str:
    """'METHOD /template' of the matched route (what counters and fault rules use)."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return f"{request.method} {resource.canonical if resource else 'UNMATCHED'}"


@web.middleware
async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
    path = request.path
    if path.startswith("/_sim/") or path == "/ws":
        return await handler(request)
    sim = sim_of(request)
    key = route_key(request)
    sim.counters.request(key, request.remote)
    decision = sim.faults.decide(key)
    if decision.delay:
        await asyncio.sleep(decision.delay)
    if decision.before:
        return await _misbehave(request, decision)
    if request.match_info.http_exception is not None:
        raise request.match_info.http_exception
    if path not in VERSIONLESS_PATHS and request.headers.get("X-Kite-Version", "").strip() != KITE_VERSION:
        raise input_error("Invalid or missing `X-Kite-Version` header: this API needs `X-Kite-Version: 3`.")
    if path not in PUBLIC_PATHS:
        account = sim.auth.check_header(request.headers.get("Authorization"))
        request[ACCOUNT_KEY] = account
        sim.order_ips.check(key, request.remote)
        _rate_limit(sim, key, account.api_key, account.user_id)
    response = await handler(request)
    if decision.after == "accept_timeout":
        await asyncio.sleep(decision.hold)
    elif decision.after == "accept_drop":
        return _drop(request)
    return response


def _rate_limit(sim: SimState, key: str, api_key: str, user_id: str) -> None:
    """Kite's per-user limits; a refused request is counted by route and user, and does not count."""
    bucket = bucket_of(key)
    if bucket == "orders":
        sim.counters.order_attempts[api_key] += 1
    if sim.limits.admit(user_id, bucket):
        return
    sim.counters.throttled(key, user_id)
    if bucket == "orders":
        sim.counters.rate_limited[api_key] += 1
    raise too_many_requests()


async def _misbehave(request: web.Request, d: Decision) -> web.StreamResponse:
    if d.before == "timeout":
        await asyncio.sleep(d.hold)
        raise KiteError(504, "NetworkException", "Gateway timed out.")
    if d.before == "drop":
        return _drop(request)
    raise status_error(d.before or "500")


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the TCP connection with no response; the client sees a reset connection."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


async def _run_engine(app: web.Application) -> AsyncIterator[None]:
    """The market clock runs for the life of the app; it is cancelled and awaited at cleanup."""
    task = asyncio.create_task(app[SIM_KEY].engine.run(), name="sim-engine")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _deliver_postbacks(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[SIM_KEY].postbacks.run(), name="sim-postbacks")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sockets(app: web.Application) -> None:
    for conn in list(app[SIM_KEY].hub.conns.values()):
        conn.abort()


def build_app(config: SimConfig | None = None, state: SimState | None = None) -> web.Application:
    state = state or SimState(config or SimConfig())
    app = web.Application(middlewares=[kite_errors, gate], client_max_size=4 * 1024 * 1024)
    app[SIM_KEY] = state
    app.router.add_get("/ws", state.hub.handle)
    app.router.add_routes(admin.routes)
    app.router.add_routes(rest_routes.routes)
    app.router.add_routes(rest_trading.routes)
    app.router.add_routes(mf_routes.routes)
    app.cleanup_ctx.append(_run_engine)
    app.cleanup_ctx.append(_deliver_postbacks)
    app.on_shutdown.append(_close_sockets)
    return app


@dataclass
class SimHandle:
    """A running stand-in: where it listens, its accounts, and its in-process state."""

    url: str
    ws_url: str
    accounts: list[SimAccount]
    state: SimState

    @property
    def account(self) -> SimAccount:
        return self.accounts[0]


@contextlib.asynccontextmanager
async def running_sim(config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                      ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[SimHandle]:
    """Serve a stand-in in the running event loop on host:port (0 = a free port); over TLS (https,
    wss, as Kite is) when given a server `ssl_context`."""
    state = SimState(config or SimConfig())
    runner = web.AppRunner(build_app(state=state), handle_signals=False, access_log=None,
                           shutdown_timeout=0.25, max_line_size=MAX_LINE_BYTES,
                           max_field_size=MAX_LINE_BYTES)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = runner.addresses[0][1]
        secure = "s" if ssl_context is not None else ""
        yield SimHandle(f"http{secure}://{host}:{bound}", f"ws{secure}://{host}:{bound}/ws", state.accounts, state)
    finally:
        await runner.cleanup()


__all__ = ["KiteError", "SimHandle", "build_app", "route_key", "running_sim"]
