"""The worker's /metrics after real jobs: durations, outcomes, retries and Kite errors by function,
pickup latency, queue depth and the dead-letter backlog, scraped from a real `ticker worker`."""

from __future__ import annotations

import uuid

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.web.procs import free_port
from ticker.core.contracts import JOB_PLACE_ORDER

from .conftest import wait_for
from .test_order_limits import market
from .test_worker_processes import statuses


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_worker_metrics_after_real_jobs(world_factory, db) -> None:
    world = await world_factory(accounts=1)
    port = free_port()
    world.start_worker("--queue", "orders", worker_port=port, worker_host="127.0.0.1")

    async def serving() -> bool:
        return await _scrape(port) is not None

    await wait_for(serving, timeout=60)
    world.sim.state.add_fault(route="POST /orders/*", kind="503", times=1)  # Kite's NetworkException, once
    job_ids = [await world.api.place_id(market(world, "sim1"), uuid.uuid4().hex) for _ in range(2)]

    async def done() -> bool:
        return set((await statuses(db, job_ids)).values()) == {"complete"}

    await wait_for(done, timeout=60)
    queue = world.names.orders_queue

    async def counted() -> bool:  # arq writes the result, then our counters move; the scrape may be early
        s = await _scrape(port) or {}
        return _value(s, "ticker_job_outcomes_total", function=JOB_PLACE_ORDER, outcome="complete") == 2

    await wait_for(counted, timeout=30)
    s = await _scrape(port)
    assert s is not None
    assert _value(s, "ticker_job_outcomes_total", function=JOB_PLACE_ORDER, outcome="retry") >= 1
    assert _value(s, "ticker_job_retries_total", function=JOB_PLACE_ORDER) >= 1
    assert _value(s, "ticker_job_kite_errors_total", function=JOB_PLACE_ORDER, error_type="NetworkException") >= 1
    runs = _value(s, "ticker_job_duration_seconds_count", function=JOB_PLACE_ORDER)
    assert runs >= 3 and _value(s, "ticker_job_duration_seconds_sum", function=JOB_PLACE_ORDER) > 0
    assert _value(s, "ticker_job_pickup_seconds_count", queue=queue) == runs
    assert ("ticker_queue_depth", (("queue", queue),)) in s
    assert ("ticker_dead_letters_pending", ()) in s
