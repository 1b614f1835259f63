"""Kite's 2026 rules through our HTTP API only: real `ticker web` and `ticker worker` processes, real
Redis and Postgres, and the stand-in enforcing Kite's limits (orders 10/s per user) as Kite does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from tests.conftest import SESSION_ID
from tests.web.conftest import fresh_database
from tests.web.test_e2e import Stack, order_body, running_stack
from ticker.core.orders import kite_tag

JOB = "/jobs/{job_id}"


@pytest_asyncio.fixture
async def stack(_server_urls, redis_url, kitesim, spec_checker) -> AsyncIterator[Stack]:
    with fresh_database(_server_urls[1], f"ticker_rules_{SESSION_ID}") as database:
        async with running_stack(database, redis_url, kitesim, spec_checker) as running:
            yield running


async def place(stack: Stack, **change: Any) -> tuple[int, dict]:
    return await stack.call("POST", "/orders", "/orders", json=order_body(stack, **change),
                            headers={"Idempotency-Key": uuid.uuid4().hex})


async def finished(stack: Stack, job_id: str) -> dict:
    """The job once it has finished (long polls until then)."""
    for _ in range(20):
        status, job = await stack.call("GET", f"/jobs/{job_id}?wait=30", JOB)
        assert status == 200
        if job["status"] not in ("queued", "in_progress"):
            return job
    raise AssertionError(f"job {job_id} did not finish: {job}")


def sim_orders(stack: Stack, job_id: str) -> list[Any]:
    return [o for o in stack.sim.state.orders.orders.values() if o.req.tag == kite_tag(job_id)]


def rate_limited(stack: Stack) -> dict:
    counters = stack.sim.state.counters.snapshot()
    return {"by_route": counters["rate_limited_by_route"], "by_user": counters["rate_limited_by_user"]}


async def budget(stack: Stack) -> dict:
    status, health = await stack.call("GET", "/health", "/health")
    assert status in (200, 503)
    return health["order_budget"]["accounts"]["primary"]


async def test_a_market_order_without_protection_goes_with_kites_automatic_one(stack: Stack) -> None:
    before = await budget(stack)
    status, accepted = await place(stack)  # MARKET, no market_protection
    assert status == 202
    job = await finished(stack, accepted["job_id"])
    assert job["status"] == "complete", job
    (order,) = sim_orders(stack, accepted["job_id"])
    assert order.req.market_protection == -1  # what the stand-in received
    _, audit = await stack.call("GET", "/orders?limit=5", "/orders")
    (row,) = [o for o in audit["orders"] if o["job_id"] == accepted["job_id"]]
    assert row["payload"]["order"]["market_protection"] == -1  # recorded as sent
    # the day's budget at Kite went down by this order, and /health says so
    after = await budget(stack)
    assert after["limit"] == before["limit"] == 5000
    assert after["used"] == before["used"] + 1 and after["remaining"] == before["remaining"] - 1


async def test_market_protection_zero_or_a_fraction_is_refused(stack: Stack) -> None:
    for bad in (0, 2.5):
        status, err = await place(stack, market_protection=bad)
        assert status == 422 and err["error"]["details"][0]["field"] == "market_protection", err
    assert stack.sim.state.counters.snapshot()["requests"].get("POST /orders/{variety}", 0) == 0


async def test_40_orders_at_once_for_one_account_all_complete_without_a_429(stack: Stack) -> None:
    answers = await asyncio.gather(*(place(stack) for _ in range(40)))
    assert {status for status, _ in answers} == {202}
    jobs = await asyncio.gather(*(finished(stack, accepted["job_id"]) for _, accepted in answers))
    assert {job["status"] for job in jobs} == {"complete"}, [j for j in jobs if j["status"] != "complete"]
    assert all(len(sim_orders(stack, accepted["job_id"])) == 1 for _, accepted in answers)
    assert rate_limited(stack) == {"by_route": {}, "by_user": {}}  # Kite's limits never had to refuse one
    counters = stack.sim.state.counters.snapshot()
    assert counters["max_orders_per_second"][stack.sim.account.api_key] <= 10


async def test_over_the_freeze_limit_needs_autoslice_and_kite_places_the_slices(stack: Stack) -> None:
    lot = stack.option["lot_size"]
    row = stack.sim.state.universe.row_of_symbol[("NFO", stack.option["tradingsymbol"])]
    freeze = int(stack.sim.state.universe.freeze[row])  # NSE's limit for the contract, as the stand-in has it
    quantity = (freeze // lot + 1) * lot  # one lot over
    status, err = await place(stack, quantity=quantity)
    assert status == 422, err
    assert err["error"]["details"][0]["field"] == "quantity" and f"freeze limit of {freeze}" in err["error"]["message"]
    assert stack.sim.state.counters.snapshot()["requests"].get("POST /orders/{variety}", 0) == 0

    status, accepted = await place(stack, quantity=quantity, autoslice=True)
    assert status == 202
    job = await finished(stack, accepted["job_id"])
    assert job["status"] == "complete", job
    slices = sorted(o.req.quantity for o in sim_orders(stack, accepted["job_id"]))
    assert slices == [lot, freeze // lot * lot] and sum(slices) == quantity
