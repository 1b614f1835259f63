"""The worker's own `/health` and `/metrics` (on WORKER_PORT; 0 serves none).

A worker cut off from Redis cannot write the heartbeat the web's /health reads, so it says so
itself: `degraded` with the reason while Redis is unreachable (HTTP 200: the process is fine and
resumes by itself; restarting it would not help), `ok` otherwise. Like the web's, it shows what is
left of each account's daily order budget at Kite. `/metrics` is this process's
Prometheus registry: dependency state, jobs by outcome, the job measures of `job_metrics` (duration,
outcomes and retries by function, Kite errors, pickup latency, queue depths, dead letters) and the
process's CPU and memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, Gauge

from ticker.infra.kite.limits import order_day_budgets
from ticker.infra.orders.validate import known_account_ids
from ticker.infra.queue.arq_adapter import QueueWorker, worker_counts
from ticker.infra.runtime.outage import Outage
from ticker.infra.runtime.prometheus import metrics_handler
from ticker.jobs.context import DEPS_KEY, Deps
from ticker.jobs.job_metrics import refresh_backlog

log = logging.getLogger(__name__)

JOBS = Gauge("ticker_worker_jobs", "jobs this worker process has finished, by outcome (since start)",
             ["queue", "outcome"])
RUNNING = Gauge("ticker_worker_jobs_running", "jobs running now", ["queue"])
BUDGET_TIMEOUT = 2.0


def health_doc(workers: Sequence[QueueWorker], outage: Outage) -> dict[str, Any]:
    counts = [worker_counts(w) for w in workers]
    for c in counts:
        JOBS.labels(c.queue, "complete").set(c.complete)
        JOBS.labels(c.queue, "failed").set(c.failed)
        JOBS.labels(c.queue, "retried").set(c.retried)
        RUNNING.labels(c.queue).set(c.running)
    doc: dict[str, Any] = {
        "status": "degraded" if outage.down else "ok",
        "redis": {"ok": not outage.down, "outages": outage.outages},
        "queues": {c.queue: {"running": c.running, "complete": c.complete, "failed": c.failed,
                             "retried": c.retried} for c in counts},
    }
    if outage.down:
        doc["reason"] = outage.reason
        doc["redis"]["down_seconds"] = round(outage.seconds_down(), 1)
    return doc


def _deps(workers: Sequence[QueueWorker]) -> Deps | None:
    return next((w.ctx[DEPS_KEY] for w in workers if w.ctx.get(DEPS_KEY) is not None), None)


async def order_budget(workers: Sequence[QueueWorker]) -> dict[str, Any]:
    """Kite's daily order budget per account, today so far (as the web's /health shows it)."""
    d = _deps(workers)
    if d is None:
        return {"resets": "00:00 IST", "accounts": {}}
    try:
        async with asyncio.timeout(BUDGET_TIMEOUT):
            accounts = await order_day_budgets(d.redis, d.names, d.settings, await known_account_ids(d.db, d.settings))
    except Exception as exc:  # a dependency is down: the rest of the document says which
        return {"resets": "00:00 IST", "accounts": {}, "error": type(exc).__name__}
    return {"resets": "00:00 IST", "accounts": accounts}


async def serve_health(host: str, port: int, workers: Sequence[QueueWorker], outage: Outage) -> web.AppRunner | None:
    """Start the health server; None when port is 0 or cannot be bound (logged, the worker runs on)."""
    if not port:
        return None

    async def health(_request: web.Request) -> web.Response:
        doc = health_doc(workers, outage)
        if not outage.down:
            doc["order_budget"] = await order_budget(workers)
        return web.json_response(doc)

    async def metrics(request: web.Request) -> web.StreamResponse:
        health_doc(workers, outage)  # refresh the job gauges
        if (d := _deps(workers)) is not None:
            await refresh_backlog(d.redis, d.db, [w.queue_name for w in workers])
        return await metrics_handler(REGISTRY)(request)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        log.error("worker health server cannot listen on %s:%s (%s); running without it", host, port, exc)
        await runner.cleanup()
        return None
    return runner
