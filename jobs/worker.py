"""`ticker worker`: arq workers for the orders queue and the default queue.

Orders get their own queue with a very short poll delay (pickup within a few milliseconds) and a job
timeout sized for one Kite call plus retries' bookkeeping; everything else runs from the default
queue. An idle worker does not poll: an enqueue wakes it (`arq_adapter.QueueWorker`). Every job
function runs measured (`job_metrics`). `--queue all` runs one arq Worker per queue in this process, sharing one set of clients.
On SIGTERM the workers stop taking jobs, let running ones finish for a grace period, then cancel
the rest, which arq hands back to the queue for another worker (order jobs are safe to re-run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

from arq.connections import ArqRedis
from arq.worker import Function, func

from ticker.core.contracts import Names
from ticker.infra.queue.arq_adapter import (
    QueueWorker,
    cancel_running,
    finished_channel,
    health_check_key,
    running_tasks,
    set_in_progress_timeout,
    stop_taking_jobs,
    worker_counts,
    wrap_function,
)
from ticker.infra.queue.enqueue import create_queue, names_for, redis_settings
from ticker.infra.runtime.heartbeat import beat
from ticker.infra.runtime.outage import POSTGRES_ERRORS, REDIS_ERRORS, Outage
from ticker.infra.runtime.settings import Settings
from ticker.jobs.context import DEPS_KEY, Deps, build_deps, close_deps
from ticker.jobs.functions import all_functions
from ticker.jobs.job_metrics import observed
from ticker.jobs.orders.order_sync import consume_postbacks
from ticker.jobs.orders.runner import attach_order_components
from ticker.jobs.worker_health import serve_health

log = logging.getLogger(__name__)

QUEUES = ("orders", "default")
HEARTBEAT_SECONDS = 5.0
HANDBACK_WAIT_S = 10.0  # how long a stopping worker waits for cancelled jobs to be handed back
# Order jobs count their own attempts (calls to Kite) in the audit; arq's try counter also counts
# hand-backs while a rate limit or the breaker makes them wait, so its ceiling is only a backstop.
ORDER_ARQ_MAX_TRIES = 500
# arq keeps a job's in-progress marker for timeout + 10 s; after a worker dies the job waits that long
# before another worker may take it. The job is cancelled at its timeout anyway, so 2 s is enough.
IN_PROGRESS_MARGIN_S = 2.0
# An idle worker sleeps until an enqueue wakes it; this is how late a lost wake-up (or a job arq
# itself re-queued) is noticed at worst.
IDLE_RECHECK_S = 1.0


def queue_name(names: Names, queue: str) -> str:
    return names.orders_queue if queue == "orders" else names.default_queue


def functions_for(queue: str, names: Names, functions: Sequence[Any] | None = None) -> list[Function]:
    """The registered job functions whose job name routes to this queue."""
    wanted = queue_name(names, queue)
    chosen = [func(f) for f in (all_functions() if functions is None else functions)]
    return [wrap_function(f, partial(_observed, queue=wanted)) for f in chosen if names.queue_for(f.name) == wanted]


def _observed(name: str, coroutine: Any, *, queue: str) -> Any:
    return observed(name, queue, coroutine)


def make_worker(queue: str, settings: Settings, deps: Deps | None, *, concurrency: int | None = None,
                burst: bool = False, functions: Sequence[Any] | None = None,
                outage: Outage | None = None) -> QueueWorker | None:
    """One arq Worker for `queue` (None when no job function routes there)."""
    names = names_for(settings)
    chosen = functions_for(queue, names, functions)
    if not chosen:
        return None
    orders = queue == "orders"
    timeout = settings.order_job_timeout_seconds if orders else settings.default_job_timeout_seconds
    worker = QueueWorker(
        outage=outage or Outage("redis"),
        finished=finished_channel(names),
        idle_recheck_s=IDLE_RECHECK_S if settings.worker_wake_on_enqueue else None,
        functions=chosen,
        queue_name=queue_name(names, queue),
        redis_settings=redis_settings(settings),
        burst=burst,
        on_startup=_on_startup,
        on_shutdown=_on_shutdown,
        handle_signals=False,  # one handler for all workers in the process: see run()
        max_jobs=concurrency or settings.worker_concurrency,
        job_timeout=timeout,
        keep_result=settings.job_result_ttl_seconds,
        poll_delay=settings.orders_poll_delay if orders else settings.default_poll_delay,
        max_tries=ORDER_ARQ_MAX_TRIES if orders else settings.order_max_tries,
        health_check_interval=settings.worker_health_check_seconds,
        ctx={DEPS_KEY: deps, "settings": settings} if deps is not None else {"settings": settings},
        log_results=False,
    )
    set_in_progress_timeout(worker, max(f.timeout_s or timeout for f in chosen) + IN_PROGRESS_MARGIN_S)
    return worker


async def _on_startup(ctx: dict[str, Any]) -> None:
    """Standalone use (e.g. the `arq` CLI): build the shared clients when run() did not."""
    if ctx.get(DEPS_KEY) is None:
        ctx[DEPS_KEY] = await build_deps(ctx["settings"], ctx["redis"])
        ctx["owns_deps"] = True
    attach_order_components(ctx[DEPS_KEY])


async def _on_shutdown(ctx: dict[str, Any]) -> None:
    if ctx.pop("owns_deps", False):
        await close_deps(ctx[DEPS_KEY])


def instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def _heartbeat(deps: Deps, workers: list[QueueWorker], instance: str, stop: asyncio.Event,
                     outage: Outage) -> None:
    while not stop.is_set():
        counts = [worker_counts(w) for w in workers]
        info = {
            "queues": [c.queue for c in counts],
            "running": sum(c.running for c in counts),
            "complete": sum(c.complete for c in counts),
            "failed": sum(c.failed for c in counts),
            "retried": sum(c.retried for c in counts),
            "redis": "down" if outage.down else "ok",
        }
        try:
            await beat(deps.redis, deps.names, "worker", instance, info)
        except REDIS_ERRORS as exc:  # a missed beat is not worth dying for; the next one may land
            outage.failed(exc, "writing the heartbeat")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)


async def _postbacks(deps: Deps, stop: asyncio.Event, outage: Outage) -> None:
    """Keep the order-postback consumer running until stop; a lost Redis connection is retried."""
    while not stop.is_set():
        try:
            await consume_postbacks(deps, stop)
            continue  # it returns only once stop is set
        except REDIS_ERRORS as exc:
            delay = outage.failed(exc, "reading order postbacks")
        except Exception:
            log.exception("order postback consumer failed; restarting")
            delay = 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


async def _serve(worker: QueueWorker, outage: Outage, stop: asyncio.Event) -> None:
    """Run one arq worker loop; a loop that dies with Redis (e.g. Redis down when it starts) is
    started again once Redis answers, on the same Worker so its running jobs stay counted."""
    while True:
        try:
            await worker.async_run()
            return
        except REDIS_ERRORS as exc:
            if stop.is_set():
                return
            delay = outage.failed(exc, f"starting {worker.queue_name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return


async def _open_deps(settings: Settings, stop: asyncio.Event, redis_outage: Outage) -> Deps | None:
    """The queue pool and shared clients, waiting out Redis or PostgreSQL being down at startup."""
    postgres = Outage("postgres")
    while not stop.is_set():
        pool: ArqRedis | None = None
        try:
            pool = await create_queue(settings, retries=0)
            redis_outage.ok()
            deps = await build_deps(settings, pool)
            postgres.ok()
            return deps
        except (*REDIS_ERRORS, *POSTGRES_ERRORS) as exc:
            which = postgres if pool is not None else redis_outage
            delay = which.failed(exc, "starting the worker")
            if pool is not None:
                await pool.aclose()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return None


async def _drain(workers: list[QueueWorker], grace: float) -> None:
    """Stop taking jobs, give running ones `grace` seconds, then cancel the rest (arq re-queues them)."""
    for w in workers:
        stop_taking_jobs(w)
    running = [t for w in workers for t in running_tasks(w)]
    if running and grace > 0:
        await asyncio.wait(running, timeout=grace)
    for w in workers:
        cancel_running(w)  # cancels what is still running and the worker's main loop
    # A cancelled job hands itself back to the queue in a shielded step. Let that finish before
    # close() cancels the tasks again, or the job stays locked until its in-progress marker expires.
    cancelled = [t for w in workers for t in running_tasks(w)]
    if cancelled:
        await asyncio.wait(cancelled, timeout=HANDBACK_WAIT_S)


async def run(settings: Settings, queues: Sequence[str], *, concurrency: int | None = None,
              burst: bool = False, stop: asyncio.Event | None = None) -> int:
    """Run workers for `queues` until `stop` is set (or, with burst, until the queues are empty)."""
    stop = stop or asyncio.Event()
    outage = Outage("redis")
    deps = await _open_deps(settings, stop, outage)
    if deps is None:  # stopped before Redis and PostgreSQL ever answered
        return 0
    attach_order_components(deps)
    workers = [w for q in queues
               if (w := make_worker(q, settings, deps, concurrency=concurrency, burst=burst, outage=outage))]
    if not workers:
        log.error("no job functions are registered for queues %s", ", ".join(queues))
        await close_deps(deps)
        await deps.redis.aclose()
        return 1
    instance = instance_id()
    runs = [asyncio.create_task(_serve(w, outage, stop), name=f"arq-{w.queue_name}") for w in workers]
    helpers = [asyncio.create_task(_heartbeat(deps, workers, instance, stop, outage), name="worker-heartbeat")]
    if "orders" in queues:
        helpers.append(asyncio.create_task(_postbacks(deps, stop, outage), name="order-postbacks"))
    stopper = asyncio.create_task(stop.wait(), name="worker-stop")
    health = await serve_health(settings.worker_host, settings.worker_port, workers, outage)
    log.info("worker %s running queues %s", instance, ", ".join(w.queue_name for w in workers))
    try:
        await asyncio.wait([*runs, stopper], return_when=asyncio.FIRST_COMPLETED)
        if burst and not stop.is_set():
            await asyncio.gather(*runs, return_exceptions=True)
        await _drain(workers, settings.worker_shutdown_grace_seconds)
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, Exception)]
        for err in failed:
            log.error("worker loop failed: %r", err)
        return 1 if failed else 0
    finally:
        stop.set()
        stopper.cancel()
        await asyncio.gather(*helpers, stopper, return_exceptions=True)
        if health is not None:
            await health.cleanup()
        for w in workers:
            with contextlib.suppress(Exception):
                await w.close()
        await close_deps(deps)
        await deps.redis.aclose()
        with contextlib.suppress(*REDIS_ERRORS):
            await _forget_heartbeat(settings, instance)


async def _forget_heartbeat(settings: Settings, instance: str) -> None:
    from ticker.infra.stores.redis import connect

    client = connect(settings.url("redis_url"))
    try:
        await client.delete(f"{names_for(settings).heartbeat('worker')}:{instance}")
    finally:
        await client.aclose()


async def check_health(settings: Settings, queues: Sequence[str]) -> int:
    """0 when a worker serves each queue, else 1. arq's health key (refreshed every
    WORKER_HEALTH_CHECK_SECONDS, gone a second later) says so; so does a worker heartbeat naming the
    queue, which outlives a busy second or two."""
    from ticker.infra.runtime.heartbeat import alive
    from ticker.infra.stores.redis import connect

    names, client, missing = names_for(settings), connect(settings.url("redis_url")), 0
    try:
        beating = {q for beat_ in await alive(client, names, "worker") for q in beat_.get("queues", [])}
        for queue in queues:
            name = queue_name(names, queue)
            value = await client.get(health_check_key(name))
            state = value.decode() if value else ("heartbeat" if name in beating else None)
            print(f"{queue}: {state or 'no live worker'}")
            missing += state is None
    finally:
        await client.aclose()
    return 1 if missing else 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ticker worker", description="Run arq workers for order and data jobs.")
    parser.add_argument("--queue", choices=("orders", "default", "all"), default="all",
                        help="which queue to serve (default: all, one worker per queue in this process)")
    parser.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help="jobs run at once per queue (default: WORKER_CONCURRENCY)")
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--check", action="store_true",
                        help="health check: exit 0 if a worker serves each queue, else 1 (runs nothing)")
    args = parser.parse_args(list(argv))
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from ticker.infra.runtime.startup import init_process, stop_event

    args = parse_args(argv or [])
    settings = init_process()
    if not settings.redis_url or not settings.database_url:
        print("ticker worker: set REDIS_URL and DATABASE_URL", file=sys.stderr)
        return 2
    queues = QUEUES if args.queue == "all" else (args.queue,)
    if args.check:
        return asyncio.run(check_health(settings, queues))

    async def go() -> int:
        return await run(settings, queues, concurrency=args.concurrency, burst=args.burst, stop=stop_event())

    return asyncio.run(go())
