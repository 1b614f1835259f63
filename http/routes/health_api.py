"""`/health`: can this web replica serve, and is the rest of the system alive?

Redis and PostgreSQL are this process's own dependencies: either one down makes the status `down`
(503, so a load balancer routes around the replica). Missing worker or streamer heartbeats make it
`degraded` (200): the API still answers and enqueues, work just waits. So does a tick bus on a Redis
of its own (TICK_REDIS_URL, checked as `tick_redis`) being down: ticks stop, orders go on.

Every check is live (a `/health` right after Redis is back says so). A failed Redis or PostgreSQL
check also says why (`reason`) and since when this replica has seen it down (`down_since`), and
feeds the outage watcher, which logs each outage once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from ticker.http.dependency_watch import POSTGRES, REDIS, TICK_REDIS, reason_of
from ticker.http.middleware.errors import json_response
from ticker.http.routes.postback_api import postback_report
from ticker.http.state import Services, services
from ticker.infra.kite.egress import egress_from
from ticker.infra.kite.limits import order_day_budgets
from ticker.infra.runtime.heartbeat import alive

CHECK_TIMEOUT = 2.0


async def _timed(probe: Awaitable[Any]) -> tuple[dict[str, Any], Exception | None]:
    """(the check as shown, the failure if it failed)."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            extra = await probe
    except Exception as exc:  # any failure of a probe is a finding, not a crash
        # Only our own messages are shown: driver errors can carry hosts and ports of internal servers.
        if isinstance(exc, LookupError):
            return {"ok": False, "error": str(exc)}, exc
        return {"ok": False, "error": type(exc).__name__, "reason": reason_of(exc)}, exc
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2), **(extra or {})}, None


def _note(svc: Services, dependency: str, check: dict[str, Any], failure: Exception | None) -> None:
    """Tell the outage watcher what the check found; show since when the dependency has been down."""
    if failure is None:
        svc.outages.succeeded(dependency)
        return
    svc.outages.failed(dependency, failure)
    outage = svc.outages.current.get(dependency)
    if outage is not None:
        check["down_since"] = outage.doc()["down_since"]


async def _redis(svc: Services) -> None:
    await svc.redis.ping()


async def _tick_redis(svc: Services) -> None:
    await svc.ticks.ping()


async def _postgres(svc: Services) -> None:
    await svc.db.fetchval("SELECT 1")


async def _process(svc: Services, name: str) -> dict[str, Any]:
    instances = await alive(svc.redis, svc.names, name)
    if not instances:
        raise LookupError(f"no live {name}")
    return {"instances": len(instances)}


async def _queues(svc: Services) -> dict[str, Any]:
    async with svc.redis.pipeline(transaction=False) as pipe:
        pipe.zcard(svc.names.orders_queue)
        pipe.zcard(svc.names.default_queue)
        orders, default = await pipe.execute()
    return {"orders": orders, "default": default}


async def _order_budget(svc: Services) -> dict[str, Any]:
    """Kite's daily order budget per account, today so far (accounts of one Kite user share theirs)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            accounts = await order_day_budgets(svc.redis, svc.names, svc.settings, sorted(await svc.refs.account_ids()))
    except Exception as exc:  # Redis or Postgres down: the checks above say so
        return {"resets": "00:00 IST", "accounts": {}, "error": type(exc).__name__}
    return {"resets": "00:00 IST", "accounts": accounts}


async def health(request: web.Request) -> web.Response:
    svc = services(request)
    probes = {"redis": _redis(svc), "postgres": _postgres(svc), "worker": _process(svc, "worker"),
              "streamer": _process(svc, "streamer"), "queues": _queues(svc)}
    if svc.ticks is not svc.redis:
        probes[TICK_REDIS] = _tick_redis(svc)
    budget = asyncio.ensure_future(_order_budget(svc))  # alongside the checks
    found = dict(zip(probes, await asyncio.gather(*map(_timed, probes.values())), strict=True))
    checks = {name: check for name, (check, _) in found.items()}
    for dependency in (REDIS, POSTGRES, TICK_REDIS):
        if dependency in found:
            _note(svc, dependency, *found[dependency])
    if not (checks["redis"]["ok"] and checks["postgres"]["ok"]):
        status = "down"
    elif all(c["ok"] for c in checks.values()):
        status = "ok"
    else:
        status = "degraded"
    body = {"status": status, "checks": checks, "ws_clients": len(svc.hub.clients), "order_budget": await budget}
    # Kite: which way orders leave (direct, or the static-IP proxy: host:port, never credentials), and
    # accounts whose HTTP postbacks could not be verified (no api_secret stored).
    body["kite"] = {"egress": egress_from(svc.settings).describe(), "postbacks": postback_report(request.app)}
    return json_response(body, status=503 if status == "down" else 200)
