"""Job status from arq + the order audit + dead letters; cancel of a queued job; basket summary."""

from __future__ import annotations

import uuid

import pytest_asyncio

from ticker.core.orders import BasketRequest, OrderRequest, plan_basket, plan_place
from ticker.infra.orders.audit_trail import record_basket, record_queued
from ticker.infra.queue.enqueue import create_queue, enqueue
from ticker.infra.queue.progress import set_progress
from ticker.infra.queue.status import basket_status, cancel_job, job_status
from ticker.infra.stores.deadletters import add_dead_letter


def order(**kw) -> OrderRequest:
    base = dict(account_id="acct", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY", quantity=1,
                product="CNC", order_type="MARKET")
    return OrderRequest(**{**base, **kw})


@pytest_asyncio.fixture
async def arq(settings):
    pool = await create_queue(settings)
    yield pool
    await pool.aclose()


async def test_unknown_job_is_none(arq, db, names) -> None:
    assert await job_status(arq, db, names, "nope-" + uuid.uuid4().hex) is None


async def test_queued_job_then_cancelled_keeps_its_id(arq, db, names) -> None:
    plan = plan_place(order(), uuid.uuid4().hex)
    await record_queued(db, plan, "acct")
    assert await enqueue(arq, names, plan.job_name, plan.payload, job_id=plan.job_id)
    await set_progress(arq, names, plan.job_id, 1, 4)
    status = await job_status(arq, db, names, plan.job_id)
    assert status.status == "queued" and status.function == "place_order"
    assert status.progress == {"done": 1, "total": 4} and status.enqueued_at is not None

    assert await cancel_job(arq, db, names, plan.job_id) is True
    assert await cancel_job(arq, db, names, plan.job_id) is False
    status = await job_status(arq, db, names, plan.job_id)
    assert status.status == "cancelled" and status.terminal and "cancelled" in status.error
    assert await arq.zscore(names.orders_queue, plan.job_id) is None
    assert not await enqueue(arq, names, plan.job_name, plan.payload, job_id=plan.job_id)


async def test_job_that_already_ran_once_is_not_cancelled(arq, db, names) -> None:
    job_id = "t-" + uuid.uuid4().hex
    await enqueue(arq, names, "cleanup", {}, job_id=job_id)
    await arq.set(f"arq:retry:{job_id}", 1)
    assert await cancel_job(arq, db, names, job_id) is False
    assert (await job_status(arq, db, names, job_id)).attempts == 1
    await arq.delete(f"arq:job:{job_id}", f"arq:retry:{job_id}")  # nothing left for later workers
    await arq.zrem(names.default_queue, job_id)


async def test_audit_outlives_arq_result(arq, db, names) -> None:
    plan = plan_place(order(), uuid.uuid4().hex)
    await record_queued(db, plan, "acct")
    await db.execute("UPDATE order_requests SET status = 'complete', attempts = 2, kite_order_id = '99',"
                     " result = $2, finished_at = now() WHERE job_id = $1", plan.job_id, {"kite_order_id": "99"})
    status = await job_status(arq, db, names, plan.job_id)
    assert status.status == "complete" and status.attempts == 2
    assert status.result == {"kite_order_id": "99"} and status.finished_at is not None


async def test_dead_letter_wins_over_failed(arq, db, names) -> None:
    job_id = "t-" + uuid.uuid4().hex
    await add_dead_letter(db, job_id=job_id, job_name="place_order", payload={"x": 1},
                          reason="InputException: bad", errors=[{"attempt": 1, "error": "bad"}])
    status = await job_status(arq, db, names, job_id)
    assert status.status == "dead_letter" and status.error == "InputException: bad" and status.attempts == 1


async def test_basket_summarises_legs(arq, db, names) -> None:
    plan = plan_basket(BasketRequest(account_id="acct", legs=[order(), order(transaction_type="SELL")]),
                       uuid.uuid4().hex)
    await record_basket(db, plan, "k")
    for leg in plan.legs:
        await record_queued(db, leg, "acct")
    summary = await basket_status(arq, db, names, plan.basket_id)
    assert summary.status == "queued" and summary.counts == {"queued": 2}
    await db.execute("UPDATE order_requests SET status = 'complete' WHERE job_id = $1", plan.legs[0].job_id)
    await db.execute("UPDATE order_requests SET status = 'dead_letter' WHERE job_id = $1", plan.legs[1].job_id)
    summary = await basket_status(arq, db, names, plan.basket_id)
    assert summary.status == "partial" and summary.counts == {"complete": 1, "dead_letter": 1}
    assert [leg.job_id for leg in summary.legs] == [leg.job_id for leg in plan.legs]
    assert await basket_status(arq, db, names, "bsk-none") is None


def test_a_status_read_as_an_order_completes_counts_the_results_attempts() -> None:
    """arq's result (complete, one call to Kite) read together with an audit row from just before
    the attempt: the status must not say 0 attempts beside a result that says 1."""
    from datetime import UTC, datetime

    from ticker.infra.orders.audit_trail import OrderRecord
    from ticker.infra.queue.status import JobStatus, _merge_audit

    now = datetime.now(UTC)
    from_arq = JobStatus(job_id="j", function="place_order", status="complete", attempts=1,
                         result={"kite_order_id": "1", "attempts": 1})
    row = OrderRecord(job_id="j", kind="place", account_id="a", payload={}, status="queued", attempts=0,
                      created_at=now, updated_at=now)
    merged = _merge_audit(from_arq, row)
    assert merged.status == "complete" and merged.attempts == 1 == merged.result["attempts"]
