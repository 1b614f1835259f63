"""Real `ticker worker` processes against the stand-in: faults, SIGKILL, SIGTERM, shared rate limits."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

from ticker.core.orders import OrderRequest, kite_tag
from ticker.infra.deadletters import get_dead_letter
from ticker.infra.heartbeat import alive
from ticker.infra.order_submit import submit_place

from .conftest import World, wait_for

TERMINAL = ("complete", "dead_letter", "failed", "cancelled")


def order(world: World, account: str) -> OrderRequest:
    return OrderRequest(account_id=account, exchange="NFO", tradingsymbol=world.option.tradingsymbol,
                        transaction_type="BUY", quantity=world.option.lot_size, product="NRML", order_type="MARKET")


async def submit_many(world: World, db, names, accounts: list[str], count: int) -> list[str]:
    async def one(i: int) -> str:
        req = order(world, accounts[i % len(accounts)])
        return (await submit_place(world.arq, db, names, world.settings, req, uuid.uuid4().hex)).job_id

    ids: list[str] = []
    for start in range(0, count, 50):
        ids += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))
    return ids


async def statuses(db, job_ids: list[str]) -> dict[str, str]:
    rows = await db.fetch("SELECT job_id, status FROM order_requests WHERE job_id = ANY($1::text[])", job_ids)
    return {r["job_id"]: r["status"] for r in rows}


async def wait_all_terminal(db, job_ids: list[str], procs, timeout: float = 60) -> dict[str, str]:
    async def all_terminal() -> bool:
        for p in procs:
            assert p.poll() is None, f"worker exited early:\n{World.log_of(p)}"
        found = await statuses(db, job_ids)
        return len(found) == len(job_ids) and all(s in TERMINAL for s in found.values())

    await wait_for(all_terminal, timeout=timeout, every=0.1)
    return await statuses(db, job_ids)


async def assert_exactly_once(world: World, db, job_ids: list[str], final: dict[str, str]) -> None:
    for job_id in job_ids:
        at_kite = world.orders_with_tag(kite_tag(job_id))
        if final[job_id] == "complete":
            assert at_kite == 1, f"{job_id}: {at_kite} orders at Kite"
        else:
            assert final[job_id] == "dead_letter" and at_kite == 0, (job_id, final[job_id], at_kite)
            assert (await get_dead_letter(db, job_id)).reason


async def test_300_orders_under_20_percent_faults_end_exactly_once(world_factory, db, names) -> None:
    world = await world_factory(accounts=30)
    for kind in ("429", "500", "502", "503", "timeout", "accept_timeout"):
        # six independent 3.65% draws per request: about 20% of placements fail one way or another
        await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": kind, "rate": 0.0365,
                                                   "delay_ms": 1500})
    job_ids = await submit_many(world, db, names, world.accounts, 300)
    procs = [world.start_worker("--queue", "orders"), world.start_worker("--queue", "orders")]
    final = await wait_all_terminal(db, job_ids, procs, timeout=90)

    await assert_exactly_once(world, db, job_ids, final)
    fired = (await world.admin("GET", "/_sim/faults"))["fired"]
    assert sum(fired.values()) >= 30 and fired.get("accept_timeout", 0) >= 1, fired
    complete = sum(1 for s in final.values() if s == "complete")
    ours = sum(world.orders_with_tag(kite_tag(j)) for j in job_ids)
    assert ours == complete == sum(world.counters["orders_by_tag"].values())
    adopted = await db.fetchval("SELECT count(*) FROM order_attempts WHERE job_id = ANY($1::text[])"
                                " AND outcome = 'adopted'", job_ids)
    assert adopted >= 1  # responses were lost after Kite accepted, and the retries found those orders


async def test_sigkill_with_orders_in_flight_then_a_new_worker_completes_each_once(world_factory, db, names):
    world = await world_factory(accounts=4, overrides={"order_job_timeout_seconds": 3.0})
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "latency", "delay_ms": 400})
    job_ids = await submit_many(world, db, names, world.accounts, 40)
    first = world.start_worker("--queue", "orders", ORDER_JOB_TIMEOUT_SECONDS=3)

    async def some_in_flight() -> bool:
        return sum(world.counters["order_attempts"].values()) >= 8

    await wait_for(some_in_flight, timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    unfinished = [j for j, s in (await statuses(db, job_ids)).items() if s not in TERMINAL]
    assert unfinished, "every order finished before the kill; nothing was in flight"

    second = world.start_worker("--queue", "all", ORDER_JOB_TIMEOUT_SECONDS=3)
    final = await wait_all_terminal(db, job_ids, [second], timeout=60)
    assert set(final.values()) == {"complete"}
    await assert_exactly_once(world, db, job_ids, final)


async def test_sigterm_hands_back_in_flight_jobs_and_exits_cleanly(world_factory, db, names) -> None:
    world = await world_factory(accounts=2)
    worker = world.start_worker("--queue", "orders", WORKER_SHUTDOWN_GRACE_SECONDS=0.2, ORDER_REQUEST_TIMEOUT=5)

    async def worker_up() -> bool:  # its heartbeat and arq's health check
        return bool(await alive(world.arq, names, "worker")) and bool(
            await world.arq.get(names.orders_queue + ":health-check"))

    await wait_for(worker_up, timeout=30)

    async def health_probe_passes() -> bool:  # as a PaaS probe runs it (which retries, as here)
        check = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ticker.infra.cli", "worker", "--queue", "orders", "--check", env=world.env(),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await check.communicate()
        return check.returncode == 0 and out.startswith(b"orders: ") and b"no live worker" not in out

    await wait_for(health_probe_passes, timeout=30)

    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "latency", "delay_ms": 1500})
    job_ids = await submit_many(world, db, names, world.accounts, 6)

    async def in_flight() -> bool:  # counted as requests arrive, before the stand-in's delay
        return world.counters["requests"].get("POST /orders/{variety}", 0) >= 1

    await wait_for(in_flight, timeout=30)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 15) == 0, World.log_of(worker)
    assert any(s not in TERMINAL for s in (await statuses(db, job_ids)).values())  # handed back, not lost

    await world.admin("DELETE", "/_sim/faults")
    final = await wait_all_terminal(db, job_ids, [world.start_worker("--queue", "orders")], timeout=60)
    reasons = [(await get_dead_letter(db, j)).reason for j, s in final.items() if s == "dead_letter"]
    assert set(final.values()) == {"complete"}, reasons
    await assert_exactly_once(world, db, job_ids, final)


async def test_two_workers_never_exceed_the_per_account_order_rate(world_factory, db, names) -> None:
    world = await world_factory(accounts=2, order_rate_limit=0)  # the stand-in only counts; we must limit
    job_ids = await submit_many(world, db, names, [world.accounts[0]] * 3 + [world.accounts[1]], 48)
    procs = [world.start_worker("--queue", "orders"), world.start_worker("--queue", "orders")]
    final = await wait_all_terminal(db, job_ids, procs, timeout=60)
    assert set(final.values()) == {"complete"}
    per_second = world.counters["max_orders_per_second"]
    busy = world.api_key(world.accounts[0])
    assert per_second[busy] == 10, per_second  # saturated, and never above Kite's limit
    assert per_second[world.api_key(world.accounts[1])] <= 10
    assert world.counters["rate_limited_by_route"] == {}  # no other Kite limit was drawn either
