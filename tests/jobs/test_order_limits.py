"""Kite's limits on the order path: errors that must not be retried, a worker restarted with calls in
flight, and the day's budget in the worker's /health (real Redis, Postgres, workers, stand-in)."""

from __future__ import annotations

import signal
import uuid

import aiohttp
import pytest

from tests.web.procs import free_port
from ticker.core.orders import OrderRequest, kite_tag
from ticker.infra.kite.rest import (
    DataException,
    GeneralException,
    InputException,
    KiteRefusal,
    KiteTimeout,
    KiteUnreachable,
    NetworkException,
    OrderException,
    PermissionException,
    TokenException,
    is_transient,
)
from ticker.infra.orders.audit_trail import attempts_of
from ticker.infra.queue.status import job_status

from .conftest import World, run_burst, wait_for
from .test_worker_processes import assert_exactly_once, statuses, submit_many, wait_all_terminal

PLACE = "POST /orders/{variety}"


def market(world: World, account: str) -> OrderRequest:
    return OrderRequest(account_id=account, exchange="NFO", tradingsymbol=world.option.tradingsymbol,
                        transaction_type="BUY", quantity=world.option.lot_size, product="NRML", order_type="MARKET")


@pytest.mark.parametrize(("exc", "transient"), [
    (NetworkException("Too many requests", code=429), True),
    (NetworkException("Service unavailable", code=503), True),
    (KiteTimeout("no answer"), True),
    (KiteUnreachable("refused"), True),
    (GeneralException("Internal server error", code=500), True),
    (GeneralException("slow down", code=429), True),
    (DataException("Couldn't parse the JSON response received from the OMS", code=502), False),
    (KiteRefusal("Insufficient funds", code=500), False),
    (OrderException("Order rejected", code=500), False),
    (InputException("Invalid `quantity`", code=400), False),
    (TokenException("Incorrect `api_key` or `access_token`", code=403), False),
    (PermissionException("Insufficient permission", code=403), False),
])
def test_only_kites_transient_errors_are_retried(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


async def test_data_exception_is_not_retried(world, db) -> None:
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "data_error", "times": 1})
    job_id = await world.api.place_id(market(world, "sim1"), uuid.uuid4().hex)
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, job_id)
    assert status.status == "dead_letter" and "DataException" in status.error, status
    (attempt,) = await attempts_of(db, job_id)
    assert attempt.outcome == "rejected"
    assert world.counters["requests"][PLACE] == 1  # sent once, never again
    assert world.orders_with_tag(kite_tag(job_id)) == 0


async def test_a_restarted_worker_stays_within_kites_window(world_factory, db) -> None:
    # Kite counts an order when it arrives; here each takes 1.5 s to be counted and answered. A worker
    # killed with calls on their way must not let its successor send more into the same window.
    world = await world_factory(accounts=2, overrides={"order_job_timeout_seconds": 10.0})
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "latency", "delay_ms": 1500})
    job_ids = await submit_many(world, db, [world.accounts[0]], 30)
    first = world.start_worker("--queue", "orders", ORDER_JOB_TIMEOUT_SECONDS=10, ORDER_REQUEST_TIMEOUT=5)

    async def calls_on_their_way() -> bool:  # requests are counted as they arrive, before the delay
        return world.counters["requests"].get(PLACE, 0) >= 8

    await wait_for(calls_on_their_way, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = world.start_worker("--queue", "orders", ORDER_JOB_TIMEOUT_SECONDS=10, ORDER_REQUEST_TIMEOUT=5)
    final = await wait_all_terminal(db, job_ids, [second], timeout=120)
    assert set(final.values()) == {"complete"}
    await assert_exactly_once(world, db, job_ids, final)
    counters = world.counters
    assert counters["rate_limited_by_route"] == {} and counters["rate_limited_by_user"] == {}, counters
    assert counters["max_orders_per_second"][world.api_key(world.accounts[0])] <= 10


async def test_the_worker_health_shows_the_day_budget_going_down(world_factory, db) -> None:
    world = await world_factory(accounts=1)
    port = free_port()
    world.start_worker("--queue", "orders", worker_port=port, worker_host="127.0.0.1")

    async def budget() -> dict | None:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as r:
                return (await r.json()).get("order_budget")
        except aiohttp.ClientError:
            return None

    async def serving() -> bool:
        return await budget() is not None

    await wait_for(serving, timeout=60)
    before = (await budget())["accounts"]["sim1"]
    job_ids = [await world.api.place_id(market(world, "sim1"), uuid.uuid4().hex) for _ in range(3)]

    async def done() -> bool:
        return set((await statuses(db, job_ids)).values()) == {"complete"}

    await wait_for(done, timeout=60)
    after = (await budget())["accounts"]["sim1"]
    assert after["limit"] == before["limit"] == world.settings.order_rate_per_day
    assert after["used"] == before["used"] + 3 and after["remaining"] == before["remaining"] - 3
