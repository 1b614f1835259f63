"""`/health`: can this web replica serve, and is the rest of the system alive?

Redis and PostgreSQL are this process's own dependencies: either one down makes the status `down`
(503, so a load balancer routes around the replica). Missing worker or streamer heartbeats make it
`degraded` (200): the API still answers and enqueues, work just waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from ticker.http.errors import json_response
from ticker.http.state import Services, services
from ticker.infra.heartbeat import alive
from ticker.infra.ratelimit import order_day_budgets

CHECK_TIMEOUT = 2.0


async def _timed(probe: Awaitable[Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            extra = await probe
    except Exception as exc:  # any failure of a probe is a finding, not a crash
        # Only our own messages are shown: driver errors can carry hosts and ports of internal servers.
        return {"ok": False, "error": str(exc) if isinstance(exc, LookupError) else type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2), **(extra or {})}


async def _redis(svc: Services) -> None:
    await svc.redis.ping()


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
    names = ("redis", "postgres", "worker", "streamer", "queues")
    budget = asyncio.ensure_future(_order_budget(svc))  # alongside the checks
    results = await asyncio.gather(_timed(_redis(svc)), _timed(_postgres(svc)), _timed(_process(svc, "worker")),
                                   _timed(_process(svc, "streamer")), _timed(_queues(svc)))
    checks = dict(zip(names, results, strict=True))
    if not (checks["redis"]["ok"] and checks["postgres"]["ok"]):
        status = "down"
    elif all(c["ok"] for c in results):
        status = "ok"
    else:
        status = "degraded"
    body = {"status": status, "checks": checks, "ws_clients": len(svc.hub.clients), "order_budget": await budget}
    return json_response(body, status=503 if status == "down" else 200)
