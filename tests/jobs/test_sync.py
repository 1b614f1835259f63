"""Kite order status into the audit: postback parsing, precedence of final states, the consumer."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest_asyncio

from ticker.core.orders import OrderRequest, kite_tag, plan_place
from ticker.infra.orders import audit_trail as audit
from ticker.infra.orders.audit_trail import get_order, record_queued
from ticker.infra.queue.enqueue import create_queue
from ticker.jobs.context import build_deps, close_deps
from ticker.jobs.orders.order_sync import consume_postbacks, postback_orders

from .conftest import wait_for


async def new_order(db, kite_order_id: str | None) -> str:
    req = OrderRequest(account_id="acct", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY",
                       quantity=1, product="CNC", order_type="MARKET")
    plan = plan_place(req, uuid.uuid4().hex)
    await record_queued(db, plan, "acct")
    if kite_order_id:
        await db.execute("UPDATE order_requests SET kite_order_id = $2 WHERE job_id = $1", plan.job_id, kite_order_id)
    return plan.job_id


@pytest_asyncio.fixture
async def job_deps(settings):
    pool = await create_queue(settings)
    d = await build_deps(settings, pool)
    yield d
    await close_deps(d)
    await pool.aclose()


def test_postback_shapes() -> None:
    order = {"order_id": "1", "status": "OPEN"}
    assert [o.to_json() for o in postback_orders(orjson.dumps({"type": "order", "data": order}))] == [order]
    assert [o.to_json() for o in postback_orders(orjson.dumps([order, {"nope": 1}]))] == [order]
    assert postback_orders(b"not json") == [] and postback_orders(b'{"type": "order"}') == []


async def test_final_status_is_never_replaced_by_a_late_live_one(db) -> None:
    oid = uuid.uuid4().hex[:12]
    job_id = await new_order(db, oid)
    assert await audit.apply_kite_status(db, kite_order_id=oid, tag=None, status="OPEN") == 1
    assert await audit.apply_kite_status(db, kite_order_id=oid, tag=None, status="COMPLETE", filled_quantity=1,
                                         average_price=101.5) == 1
    assert await audit.apply_kite_status(db, kite_order_id=oid, tag=None, status="OPEN") == 0
    record = await get_order(db, job_id)
    assert (record.kite_status, record.filled_quantity, record.average_price) == ("COMPLETE", 1, 101.5)


async def test_postback_before_the_job_recorded_the_id_matches_by_tag(db) -> None:
    job_id = await new_order(db, None)
    oid = uuid.uuid4().hex[:12]
    assert await audit.apply_kite_status(db, kite_order_id=oid, tag=kite_tag(job_id), status="OPEN") == 1
    record = await get_order(db, job_id)
    assert record.kite_order_id == oid and record.kite_status == "OPEN"


async def test_consumer_applies_published_postbacks(job_deps, db, redis, names) -> None:
    oid = uuid.uuid4().hex[:12]
    job_id = await new_order(db, oid)
    stop = asyncio.Event()
    task = asyncio.create_task(consume_postbacks(job_deps, stop))
    try:
        async def applied() -> bool:
            await redis.publish(names.orders, orjson.dumps({"type": "order", "data": {
                "order_id": oid, "status": "REJECTED", "status_message": "margin"}}))
            return (await get_order(db, job_id)).kite_status == "REJECTED"

        await wait_for(applied, every=0.1)
        assert (await get_order(db, job_id)).status_message == "margin"
    finally:
        stop.set()
        await task


async def test_sync_job_brings_kite_status_into_the_audit(world, db) -> None:
    from ticker.core.contracts import JOB_SYNC_ORDERS
    from ticker.infra.queue.enqueue import enqueue
    from ticker.infra.queue.status import job_status

    from .conftest import run_burst
    from .test_order_jobs import option_order, place

    low = round(max(world.option.tick_size, 0.05) * 2, 2)
    resting = await place(world, db, option_order(world, "sim1", order_type="LIMIT", price=low))
    filled = await place(world, db, option_order(world, "sim2"))
    await run_burst(world)
    # The stand-in fills or rests the orders; cancel the resting one behind our back, as a user might.
    (sim_order,) = world.sim.state.orders_with_tag(kite_tag(resting))
    world.sim.state.orders.cancel(world.api_key("sim1"), sim_order["order_id"])
    assert (await get_order(db, resting)).kite_status != "CANCELLED"  # only Kite knows so far

    sync_id = "sync-" + uuid.uuid4().hex
    await enqueue(world.arq, world.names, JOB_SYNC_ORDERS, {}, job_id=sync_id)
    await run_burst(world, queues=("default",))
    result = (await job_status(world.arq, db, world.names, sync_id)).result
    assert not set(result["errors"]) & {"sim1", "sim2"}, result
    # What the audit says now is what Kite says, whoever brought it in first (the count of rows this
    # run changed would depend on that, so the state is what is checked).
    assert (await get_order(db, resting)).kite_status == "CANCELLED"
    (done,) = world.sim.state.orders_with_tag(kite_tag(filled))
    record = await get_order(db, filled)
    assert record.kite_status == done["status"] and record.filled_quantity == done["filled_quantity"]


async def test_portfolio_reads_are_cached_and_rate_limited(world_factory, db) -> None:
    from ticker.core.contracts import JOB_PORTFOLIO
    from ticker.infra.queue.enqueue import enqueue
    from ticker.infra.queue.status import job_status

    from .conftest import run_burst

    world = await world_factory(overrides={"portfolio_cache_seconds": 3600})  # fresh however slow the run

    reads = [f"pf-{n}-{uuid.uuid4().hex}" for n in range(2)]
    for job_id in reads:
        await enqueue(world.arq, world.names, JOB_PORTFOLIO, {"account_id": "sim1", "kind": "positions"},
                      job_id=job_id)
    bad = "pf-bad-" + uuid.uuid4().hex
    await enqueue(world.arq, world.names, JOB_PORTFOLIO, {"account_id": "sim1", "kind": "nope"}, job_id=bad)
    before = world.counters["requests"].get("GET /portfolio/positions", 0)
    await run_burst(world, queues=("default",))
    results = [await job_status(world.arq, db, world.names, j) for j in reads]
    assert world.counters["requests"].get("GET /portfolio/positions", 0) - before == 1, results
    assert sorted(r.result["cached"] for r in results) == [False, True]
    assert results[0].result["data"] == results[1].result["data"]
    status = await job_status(world.arq, db, world.names, bad)
    assert status.status == "failed" and "kind" in status.error


async def test_a_portfolio_read_leaves_another_jobs_fetch_lock_alone(world_factory, db) -> None:
    """A read that waited out another job's fetch lock fetches itself, and must not release that lock."""
    from ticker.core.contracts import JOB_PORTFOLIO
    from ticker.infra.queue.enqueue import enqueue
    from ticker.infra.queue.status import job_status
    from ticker.jobs.data.portfolio_reads import cache_key

    from .conftest import run_burst

    world = await world_factory()
    lock = cache_key(world.names, "sim1", "holdings", None) + ":fetching"
    await world.arq.set(lock, b"another-job", px=600_000)
    job_id = f"pf-lock-{uuid.uuid4().hex}"
    await enqueue(world.arq, world.names, JOB_PORTFOLIO, {"account_id": "sim1", "kind": "holdings"}, job_id=job_id)
    await run_burst(world, queues=("default",))
    assert (await job_status(world.arq, db, world.names, job_id)).status == "complete"
    assert await world.arq.get(lock) == b"another-job"
    await world.arq.delete(lock)
