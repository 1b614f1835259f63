"""Portfolio snapshots from the worker's side: the refresh job, how requests for it are shared, the
refresh an order update triggers, and Kite's status reaching the order job's result."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest_asyncio

from ticker.core.contracts import JOB_REFRESH_PORTFOLIO, JOB_SYNC_ORDERS
from ticker.core.orders import OrderRequest, kite_tag, plan_place
from ticker.core.portfolio import SNAPSHOT_KINDS, PortfolioSnapshot, snapshot_key
from ticker.infra.kite.schemas import Order
from ticker.infra.orders import audit_trail as audit
from ticker.infra.orders.audit_trail import get_order, record_queued
from ticker.infra.queue.status import job_status
from ticker.jobs.context import build_deps, close_deps
from ticker.jobs.data.portfolio_refresh import request_refresh
from ticker.jobs.orders.order_sync import record_kite_state
from ticker.jobs.schedule.scheduler import build_schedules

from .conftest import World, run_burst
from .test_order_jobs import option_order, place


@pytest_asyncio.fixture
async def world_deps(world: World):
    d = await build_deps(world.settings, world.arq)
    yield d
    await close_deps(d)


async def queued_refreshes(world: World) -> list[str]:
    jobs = await world.arq.zrange(world.names.default_queue, 0, -1)
    return [j.decode() for j in jobs if j.decode().startswith(JOB_REFRESH_PORTFOLIO)]


async def test_requests_share_a_refresh_until_it_starts(world: World, world_deps, db) -> None:
    assert await request_refresh(world_deps, "sim1") is True
    assert await request_refresh(world_deps, "sim1") is False  # queued, not started: shared
    (job_id,) = await queued_refreshes(world)
    calls = world.counters["requests"].get("GET /portfolio/positions", 0)
    await run_burst(world, queues=("default",))
    status = await job_status(world.arq, db, world.names, job_id)
    assert status.status == "complete" and set(status.result["refreshed"]["sim1"]) == set(SNAPSHOT_KINDS)
    assert world.counters["requests"].get("GET /portfolio/positions", 0) - calls == 1
    for kind in SNAPSHOT_KINDS:
        raw = await world.arq.get(snapshot_key(world.names, "sim1", kind))
        snap = PortfolioSnapshot.model_validate_json(raw)
        assert snap.account_id == "sim1" and snap.kind == kind and snap.data is not None
    # once a refresh has started, a request needs a later one: it may have fetched too early
    assert await request_refresh(world_deps, "sim1") is True
    assert await queued_refreshes(world) != [job_id]


async def test_an_order_update_refreshes_its_account_and_reaches_the_job_result(world: World, world_deps,
                                                                                  db) -> None:
    job_id = await place(world, db, option_order(world, "sim2"))
    await run_burst(world)
    record = await get_order(db, job_id)
    assert record.kite_order_id and record.result["kite_status"] is None  # Kite has not reported yet
    kite_id = record.kite_order_id

    assert await record_kite_state(world_deps, Order(order_id=kite_id, status="OPEN")) == 1
    assert len(await queued_refreshes(world)) == 1
    assert (await job_status(world.arq, db, world.names, job_id)).result["kite_status"] == "OPEN"
    await run_burst(world, queues=("default",))

    assert await record_kite_state(world_deps, Order(order_id=kite_id, status="OPEN")) == 1
    assert await queued_refreshes(world) == []  # nothing changed: nothing to refresh
    lot = world.option.lot_size
    filled = Order(order_id=kite_id, status="COMPLETE", filled_quantity=lot, average_price=101.5)
    assert await record_kite_state(world_deps, filled) == 1
    assert len(await queued_refreshes(world)) == 1
    status = await job_status(world.arq, db, world.names, job_id)
    assert status.result["kite_status"] == "COMPLETE" and status.result["kite_order_id"] == kite_id
    await run_burst(world, queues=("default",))
    raw = await world.arq.get(snapshot_key(world.names, "sim2", "positions"))
    net = PortfolioSnapshot.model_validate_json(raw).data["net"]
    assert any(p["tradingsymbol"] == world.option.tradingsymbol and p["quantity"] == lot for p in net)


async def test_a_status_kite_reports_before_the_job_ends_stays_in_its_result(db) -> None:
    req = OrderRequest(account_id="acct", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY",
                       quantity=1, product="CNC", order_type="MARKET")
    plan = plan_place(req, uuid.uuid4().hex)
    await record_queued(db, plan, "acct")
    kite_id = uuid.uuid4().hex[:12]
    # the postback is matched by our tag: the job has not recorded Kite's order id yet
    assert await audit.apply_kite_status(db, kite_order_id=kite_id, tag=kite_tag(plan.job_id), status="OPEN") == 1
    await audit.complete(db, plan.job_id, 1, "ok", 5.0, kite_id, {"job_id": plan.job_id, "kite_status": None})
    assert (await get_order(db, plan.job_id)).result["kite_status"] == "OPEN"


def test_the_portfolio_refresh_runs_in_market_hours_at_its_interval(settings) -> None:
    jobs = {JOB_REFRESH_PORTFOLIO, JOB_SYNC_ORDERS}
    custom = settings.model_copy(update={"portfolio_refresh_seconds": 45})
    schedule = next(s for s in build_schedules(custom, jobs) if s.name == "portfolio_refresh")
    assert schedule.job_name == JOB_REFRESH_PORTFOLIO and schedule.market_hours_only
    assert schedule.trigger.interval == timedelta(seconds=45)
    off = settings.model_copy(update={"schedule_portfolio_refresh": False})
    assert "portfolio_refresh" not in {s.name for s in build_schedules(off, jobs)}
