"""Order path latency: enqueue -> order created at the Kite stand-in, at 100 orders/s over 10 accounts.

A real `ticker worker --queue orders` process serves the orders queue; this process runs the
stand-in (in its event loop, so each order's creation time is read exactly) and enqueues place
jobs on a fixed 100/s schedule, round-robin over 10 accounts. Latency per order = the stand-in's
creation time of the order carrying the job's tag - the time just before the enqueue.

Rows:
- the path itself, with our orders poll delay and with arq's default 0.5 s side by side. Each
  account then receives exactly Kite's limit (10 orders/s): a load at the limit has no spare
  capacity, so any waiting the limiter must do piles up and the latency measures queueing, not the
  path. Here the per-second limit (ours and the stand-in's) is raised to 20/s so it does not bind.
- the same load at Kite's real 10/s per account (info): what the limiter's waiting costs there.
- an idle orders worker: its CPU over 10 s, then the pickup latency (enqueue -> job start, from
  arq's result records) of orders sent one at a time; woken by the enqueue (ours), against arq's
  default 0.5 s poll and against a 5 ms poll without the wake-up, each its own worker process.
- two worker processes sharing one account's limit: the most orders the stand-in saw in any one
  second for that account (goal: exactly Kite's 10, saturated and never above).
- a Kite outage with orders queued: the calls a failing Kite receives while 6 orders for one account
  wait, with the per-account circuit breaker and without it (anchor: a threshold never reached;
  then only the account's rate limit caps the retries).
- the same load at Kite's real 10/s per account for 6 s (info): what the limiter's waiting costs.
- at Kite's limits: the same 10 orders/s per account for 60 s with every one of the stand-in's
  limits on (10/s, 400/min, 5,000/day per user). 600 orders a minute against Kite's 400 means the
  last third waits for the minute window: the row shows what that costs and that no order drew a
  429 at the stand-in (the goal).
Each measurement gets its own Redis namespace, so no limiter window carries over between them.

Redis/Postgres: TEST_REDIS_URL / TEST_DATABASE_URL (else REDIS_URL / DATABASE_URL), else embedded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.bench.harness import Report, bench_servers, fmt_time, percentile

RATE, ACCOUNTS, SECONDS, WARMUP = 100, 10, 6.0, 1.0
SHARED_ORDERS = 48  # two workers, one account: five seconds' worth at Kite's limit
OUTAGE_ORDERS, OUTAGE_SECONDS = 6, 2.0
LIMITS_SECONDS = 60.0
ARQ_DEFAULT_POLL = 0.5
GOAL_P50, GOAL_P99 = 0.015, 0.050
KITE_PER_SECOND = 10
IDLE_SECONDS, PICKUP_ORDERS, PICKUP_GAP = 10.0, 100, 0.05
GOAL_IDLE_CPU = 0.02


@contextlib.asynccontextmanager
async def _database(pg_admin: str) -> AsyncIterator[str]:
    import asyncpg

    from ticker.infra.stores.migrate import migrate

    name = f"bench_orders_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = urlunsplit(urlsplit(pg_admin)._replace(path=f"/{name}"))
    try:
        await migrate(url)
        yield url
    finally:
        conn = await asyncpg.connect(pg_admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def _seed(db: Any, sim: Any, settings: Any) -> tuple[Any, list[str]]:
    """The stand-in's instruments and accounts into Postgres; returns an option to trade, account ids."""
    from ticker.core.instruments import parse_csv
    from ticker.infra.kite.rest import KiteApi, KiteHttp
    from ticker.infra.stores.accounts import KiteAccount, account_store

    http = KiteHttp(sim.url)
    raw = await KiteApi(http, sim.accounts[0].api_key, sim.accounts[0].access_token).instruments("NFO")
    await http.close()
    instruments = parse_csv(raw)
    await db.executemany(
        "INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, name, tick_size, lot_size,"
        " instrument_type, segment, exchange) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        [(i.instrument_token, i.exchange_token, i.tradingsymbol, i.name, i.tick_size, i.lot_size,
          i.instrument_type, i.segment, i.exchange) for i in instruments],
    )
    store, ids = account_store(db, settings), []
    for n, acct in enumerate(sim.accounts):
        ids.append(f"bench{n + 1}")
        await store.upsert(KiteAccount(account_id=ids[-1], api_key=acct.api_key, access_token=acct.access_token))
    return next(i for i in instruments if i.is_option and i.lot_size > 1), ids


def _env(settings: Any, poll_delay: float, per_second: int, wake: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KITE_", "REDIS_", "DATABASE_"))}
    env.update({
        "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
        "REDIS_NAMESPACE": settings.redis_namespace, "PUBLISH_CHANNEL_PREFIX": settings.publish_channel_prefix,
        "KITE_ROOT": settings.kite_root, "ACCOUNT_ENCRYPTION_KEY": settings.account_encryption_key.get_secret_value(),
        "ENVIRONMENT": "test", "LOG_LEVEL": "WARNING", "ORDERS_POLL_DELAY": str(poll_delay),
        "ORDER_RATE_PER_SECOND": str(per_second), "WORKER_WAKE_ON_ENQUEUE": "true" if wake else "false",
    })
    return env


async def _worker_up(arq: Any, names: Any, proc: asyncio.subprocess.Process) -> None:
    from ticker.infra.runtime.heartbeat import alive

    deadline = time.monotonic() + 30
    while not await alive(arq, names, "worker"):
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError("the bench worker did not start")
        await asyncio.sleep(0.1)


async def _load(arq: Any, names: Any, option: Any, accounts: list[str], seconds: float) -> dict[str, float]:
    """Enqueue RATE place jobs per second on a fixed schedule; returns job id -> enqueue wall time."""
    from ticker.core.orders import OrderRequest, plan_place
    from ticker.infra.queue.enqueue import enqueue

    sent: dict[str, float] = {}
    start, n = time.perf_counter(), int(seconds * RATE)
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / RATE - time.perf_counter()))
        req = OrderRequest(account_id=accounts[i % len(accounts)], exchange="NFO", tradingsymbol=option.tradingsymbol,
                           transaction_type="BUY", quantity=option.lot_size, product="NRML", order_type="MARKET")
        plan = plan_place(req, uuid.uuid4().hex)
        sent[plan.job_id] = time.time()
        await enqueue(arq, names, plan.job_name, plan.payload, job_id=plan.job_id)
    return sent


async def _settled(db: Any, job_ids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = await db.fetchval("SELECT count(*) FROM order_requests WHERE job_id = ANY($1::text[])"
                                 " AND status IN ('complete', 'dead_letter')", job_ids)
        if done == len(job_ids):
            return
        await asyncio.sleep(0.2)


async def _measure(settings: Any, sim: Any, db: Any, option: Any, accounts: list[str], poll: float,
                   per_second: int, seconds: float = SECONDS, wake: bool = True) -> dict:
    from ticker.core.orders import kite_tag
    from ticker.infra.queue.enqueue import create_queue, names_for

    settings = settings.model_copy(update={"redis_namespace": f"bo{uuid.uuid4().hex[:8]}"})
    names, arq = names_for(settings), await create_queue(settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ticker.infra.cli.main", "worker", "--queue", "orders",
        env=_env(settings, poll, per_second, wake), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await _worker_up(arq, names, proc)
        await _load(arq, names, option, accounts, WARMUP)
        sim.state.reset()  # every one of Kite's limits back on, windows empty
        sim.state.set_limits(orders_per_second=per_second)
        sent = await _load(arq, names, option, accounts, seconds)
        await _settled(db, list(sent))
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        await arq.aclose()
    placed = {o.req.tag: o.placed_at for o in sim.state.orders.orders.values()}
    lat = [placed[kite_tag(j)] - t for j, t in sent.items() if kite_tag(j) in placed]
    counters = sim.state.counters.snapshot()
    return {"lat": lat, "poll": poll, "missing": len(sent) - len(lat), "n": len(sent),
            "429": sum(counters["rate_limited_by_route"].values()),
            "max_per_s": max(counters["max_orders_per_second"].values())}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _idle_and_pickup(settings: Any, sim: Any, db: Any, option: Any, accounts: list[str], poll: float,
                           wake: bool) -> dict:
    """An orders worker's CPU while idle for IDLE_SECONDS, then the pickup latency (enqueue -> job start,
    from arq's own result records) of PICKUP_ORDERS orders sent one at a time to that idle worker."""
    from ticker.core.orders import OrderRequest, plan_place
    from ticker.infra.queue.arq_adapter import read_view
    from ticker.infra.queue.enqueue import create_queue, enqueue, names_for

    settings = settings.model_copy(update={"redis_namespace": f"bi{uuid.uuid4().hex[:8]}"})
    names, arq = names_for(settings), await create_queue(settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ticker.infra.cli.main", "worker", "--queue", "orders",
        env=_env(settings, poll, 2 * KITE_PER_SECOND, wake), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        await _worker_up(arq, names, proc)
        await asyncio.sleep(1.0)  # start-up work done
        cpu, wall = _cpu_seconds(proc.pid), time.perf_counter()
        await asyncio.sleep(IDLE_SECONDS)
        idle_cpu = (_cpu_seconds(proc.pid) - cpu) / (time.perf_counter() - wall)
        sim.state.reset()
        ids = []
        for i in range(PICKUP_ORDERS):
            req = OrderRequest(account_id=accounts[i % len(accounts)], exchange="NFO", tradingsymbol=option.tradingsymbol,
                               transaction_type="BUY", quantity=option.lot_size, product="NRML", order_type="MARKET")
            plan = plan_place(req, uuid.uuid4().hex)
            await enqueue(arq, names, plan.job_name, plan.payload, job_id=plan.job_id)
            ids.append(plan.job_id)
            await asyncio.sleep(PICKUP_GAP)  # the worker is idle again before the next one
        await _settled(db, ids)
        views = [await read_view(arq, j) for j in ids]
        pickup = [(v.result.started_ms - v.result.enqueued_ms) / 1000 for v in views if v.result is not None]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        await arq.aclose()
    return {"cpu": idle_cpu, "pickup": pickup, "n": len(ids)}


async def _two_workers_one_account(settings: Any, sim: Any, db: Any, option: Any, account: str) -> int:
    """Most orders the stand-in saw for `account` in any one second, from two worker processes."""
    from ticker.core.orders import OrderRequest, plan_place
    from ticker.infra.queue.enqueue import create_queue, enqueue, names_for
    from ticker.infra.runtime.heartbeat import alive

    local = settings.model_copy(update={"redis_namespace": f"{settings.redis_namespace}-shared"})  # fresh limits
    names, arq = names_for(local), await create_queue(local)
    env = _env(local, local.orders_poll_delay, KITE_PER_SECOND)
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ticker.infra.cli.main", "worker", "--queue", "orders", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while len(await alive(arq, names, "worker")) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        sim.state.reset()
        sim.state.set_order_rate_limit(0)  # the stand-in only counts: our limiter is what is measured
        ids = []
        for _ in range(SHARED_ORDERS):
            req = OrderRequest(account_id=account, exchange="NFO", tradingsymbol=option.tradingsymbol,
                               transaction_type="BUY", quantity=option.lot_size, product="NRML",
                               order_type="MARKET")
            plan = plan_place(req, uuid.uuid4().hex)
            await enqueue(arq, names, plan.job_name, plan.payload, job_id=plan.job_id)
            ids.append(plan.job_id)
        await _settled(db, ids, timeout=60)
    finally:
        for proc in procs:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
        await arq.aclose()
    key = sim.accounts[int(account.removeprefix("bench")) - 1].api_key
    return sim.state.counters.max_orders_in_window(key)


async def _calls_during_outage(settings: Any, sim: Any, db: Any, option: Any, account: str,
                               threshold: int) -> int:
    """Placements a failing Kite receives in OUTAGE_SECONDS while OUTAGE_ORDERS orders wait (an
    in-process worker with fast retries, the breaker opening after `threshold` failures)."""
    from ticker.core.orders import OrderRequest, plan_place
    from ticker.infra.queue.enqueue import create_queue, enqueue, names_for
    from ticker.jobs.worker import run as run_worker

    local = settings.model_copy(update={
        "redis_namespace": f"{settings.redis_namespace}-outage{threshold}", "breaker_failure_threshold": threshold,
        "breaker_open_seconds": 0.3, "order_retry_base_seconds": 0.02, "order_retry_max_seconds": 0.2,
        "order_max_tries": 1000, "order_request_timeout": 0.5})
    names, arq = names_for(local), await create_queue(local)
    sim.state.reset()
    sim.state.add_fault(route="POST /orders/*", kind="503")
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(local, ("orders",), stop=stop))
    try:
        ids = []
        for _ in range(OUTAGE_ORDERS):
            req = OrderRequest(account_id=account, exchange="NFO", tradingsymbol=option.tradingsymbol,
                               transaction_type="BUY", quantity=option.lot_size, product="NRML",
                               order_type="MARKET")
            plan = plan_place(req, uuid.uuid4().hex)
            await enqueue(arq, names, plan.job_name, plan.payload, job_id=plan.job_id)
            ids.append(plan.job_id)
        await asyncio.sleep(OUTAGE_SECONDS)
        calls = sim.state.counters.requests.get("POST /orders/{variety}", 0)
        sim.state.reset()  # Kite recovers; the orders complete before the next measurement
        await _settled(db, ids, timeout=60)
    finally:
        stop.set()
        await worker
        await arq.aclose()
    return calls


async def _bench() -> tuple[dict, dict, dict, dict]:
    from cryptography.fernet import Fernet

    from ticker.infra.kitesim.config import SimConfig
    from ticker.infra.kitesim.server import running_sim
    from ticker.infra.runtime.settings import load_settings
    from ticker.infra.stores.db import create_pool

    with bench_servers("orders") as (redis_url, pg_admin):
        async with _database(pg_admin) as db_url, \
                running_sim(SimConfig(accounts=ACCOUNTS, seed=11, tick_interval_ms=1000)) as sim:
            settings = load_settings(environment="test", redis_url=redis_url, database_url=db_url, kite_root=sim.url,
                                     redis_namespace=f"bo{uuid.uuid4().hex[:8]}", publish_channel_prefix="ticker:bench",
                                     account_encryption_key=Fernet.generate_key().decode())
            db = await create_pool(db_url)
            try:
                option, accounts = await _seed(db, sim, settings)
                poll = settings.orders_poll_delay
                ours = await _measure(settings, sim, db, option, accounts, poll, 2 * KITE_PER_SECOND)
                anchor = await _measure(settings, sim, db, option, accounts, ARQ_DEFAULT_POLL, 2 * KITE_PER_SECOND,
                                        wake=False)
                at_limit = await _measure(settings, sim, db, option, accounts, poll, KITE_PER_SECOND)
                idle = {label: await _idle_and_pickup(settings, sim, db, option, accounts, p, wake)
                         for label, p, wake in (("ours", poll, True), ("poll", poll, False),
                                                ("arq", ARQ_DEFAULT_POLL, False))}
                extra = {
                    "idle": idle,
                    "limits": await _measure(settings, sim, db, option, accounts, poll, KITE_PER_SECOND,
                                             LIMITS_SECONDS),
                    "shared_max": await _two_workers_one_account(settings, sim, db, option, accounts[0]),
                    "outage_breaker": await _calls_during_outage(settings, sim, db, option, accounts[1], 2),
                    "outage_none": await _calls_during_outage(settings, sim, db, option, accounts[2], 1_000_000),
                }
            finally:
                await db.close()
            return ours, anchor, at_limit, extra


def _summary(r: dict) -> str:
    return (f"p50 {fmt_time(percentile(r['lat'], 50))}, p99 {fmt_time(percentile(r['lat'], 99))} "
            f"({r['n'] - r['missing']}/{r['n']} placed, {r['429']} x 429, max {r['max_per_s']}/s per account)")


def _idle_summary(r: dict) -> str:
    return (f"idle {r['cpu']:.1%} of a core, pickup p50 {fmt_time(percentile(r['pickup'], 50))}, "
            f"p99 {fmt_time(percentile(r['pickup'], 99))}")


async def run(report: Report) -> None:
    ours, anchor, at_limit, extra = await _bench()
    limits = extra["limits"]
    p50, p99 = percentile(ours["lat"], 50), percentile(ours["lat"], 99)
    report.row(
        f"order path enqueue -> order at stand-in, {RATE}/s over {ACCOUNTS} accounts",
        f"{_summary(ours)}, poll {fmt_time(ours['poll'])}",
        anchor=f"arq default poll 0.5 s: {_summary(anchor)}",
        ratio=percentile(anchor["lat"], 50) / p50,
        goal=f"p50 <= {fmt_time(GOAL_P50)}, p99 <= {fmt_time(GOAL_P99)}",
        met=p50 <= GOAL_P50 and p99 <= GOAL_P99 and ours["missing"] == 0,
    )
    idle = extra["idle"]
    ours_idle = idle["ours"]
    report.row(
        f"idle orders worker CPU, then pickup (enqueue -> job start) of {PICKUP_ORDERS} orders sent one at a time",
        _idle_summary(ours_idle) + ", woken by the enqueue",
        anchor=f"arq default poll 0.5 s: {_idle_summary(idle['arq'])}; poll 5 ms without the wake-up: "
               f"{_idle_summary(idle['poll'])}",
        ratio=idle["poll"]["cpu"] / max(ours_idle["cpu"], 1e-6),
        goal=f"idle <= {GOAL_IDLE_CPU:.0%} of a core, pickup p50 <= {fmt_time(GOAL_P50)}",
        met=ours_idle["cpu"] <= GOAL_IDLE_CPU and percentile(ours_idle["pickup"], 50) <= GOAL_P50
        and len(ours_idle["pickup"]) == ours_idle["n"],
    )
    report.row(f"same load at Kite's {KITE_PER_SECOND}/s per account (limiter waits)", _summary(at_limit),
               goal="info")
    report.row(f"order path at Kite's limits: {ACCOUNTS} accounts x {KITE_PER_SECOND} orders/s for "
               f"{LIMITS_SECONDS:.0f} s, stand-in limits on (10/s, 400/min, 5,000/day per user)", _summary(limits),
               goal="0 x 429 at the stand-in", met=limits["429"] == 0 and limits["missing"] == 0)
    report.row(f"two workers, {SHARED_ORDERS} orders on one account: most orders at the stand-in in any second",
               str(extra["shared_max"]), goal=f"= {KITE_PER_SECOND} (saturated, never above)",
               met=extra["shared_max"] == KITE_PER_SECOND)
    with_breaker, without = extra["outage_breaker"], extra["outage_none"]
    report.row(f"calls a failing Kite receives in {OUTAGE_SECONDS:.0f} s, {OUTAGE_ORDERS} orders queued on one account",
               f"{with_breaker} with the breaker (opens after 2 failures, 0.3 s open)",
               anchor=f"{without} without a breaker", ratio=without / max(with_breaker, 1),
               goal="fewer with the breaker", met=with_breaker < without)


if __name__ == "__main__":
    asyncio.run(run(Report()))
