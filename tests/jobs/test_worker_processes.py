"""Real `ticker worker` processes against the stand-in: faults, SIGKILL, SIGTERM, shared rate limits."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

import pytest
from arq.jobs import Job

from ticker.core.orders import OrderRequest, kite_tag
from ticker.infra.runtime.heartbeat import alive
from ticker.infra.stores.deadletters import get_dead_letter

from .conftest import HOLD_MS, World, wait_for

TERMINAL = ("complete", "dead_letter", "failed", "cancelled")


def order(world: World, account: str) -> OrderRequest:
    return OrderRequest(account_id=account, exchange="NFO", tradingsymbol=world.option.tradingsymbol,
                        transaction_type="BUY", quantity=world.option.lot_size, product="NRML", order_type="MARKET")


async def submit_many(world: World, db, accounts: list[str], count: int) -> list[str]:
    """Orders round-robin over `accounts`: order i goes to accounts[i % len(accounts)]."""
    async def one(i: int) -> str:
        req = order(world, accounts[i % len(accounts)])
        return await world.api.place_id(req, uuid.uuid4().hex)

    ids: list[str] = []
    for start in range(0, count, 50):
        ids += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))
    return ids


async def statuses(db, job_ids: list[str]) -> dict[str, str]:
    rows = await db.fetch("SELECT job_id, status FROM order_requests WHERE job_id = ANY($1::text[])", job_ids)
    return {r["job_id"]: r["status"] for r in rows}


async def wait_all_terminal(db, job_ids: list[str], procs, timeout: float = 120) -> dict[str, str]:
    async def all_terminal() -> bool:
        for p in procs:
            assert p.poll() is None, f"worker exited early:\n{World.log_of(p)}"
        found = await statuses(db, job_ids)
        return len(found) == len(job_ids) and all(s in TERMINAL for s in found.values())

    try:
        await wait_for(all_terminal, timeout=timeout, every=0.1)
    except pytest.fail.Exception:
        found = await statuses(db, job_ids)
        stuck = {j: s for j, s in found.items() if s not in TERMINAL}
        logs = "\n".join(World.log_of(p)[-3000:] for p in procs)
        pytest.fail(f"{len(stuck)} of {len(job_ids)} orders not finished within {timeout}s: {stuck}\n{logs}")
    return await statuses(db, job_ids)


def held_at_kite(world: World) -> int:
    """Placements that reached the stand-in and are still inside an injected delay (counted on
    arrival, and as attempts only once the delay is over and the stand-in acts on them)."""
    counters = world.counters
    return counters["requests"].get("POST /orders/{variety}", 0) - sum(counters["order_attempts"].values())


async def assert_exactly_once(world: World, db, job_ids: list[str], final: dict[str, str]) -> None:
    for job_id in job_ids:
        at_kite = world.orders_with_tag(kite_tag(job_id))
        if final[job_id] == "complete":
            assert at_kite == 1, f"{job_id}: {at_kite} orders at Kite"
        else:
            assert final[job_id] == "dead_letter" and at_kite == 0, (job_id, final[job_id], at_kite)
            assert (await get_dead_letter(db, job_id)).reason


async def test_300_orders_under_20_percent_faults_end_exactly_once(world_factory, db) -> None:
    world = await world_factory(accounts=30)
    for kind in ("429", "500", "502", "503", "timeout", "accept_timeout"):
        # six independent 3.65% draws per request: about 20% of placements fail one way or another
        await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": kind, "rate": 0.0365,
                                                   "delay_ms": HOLD_MS})
    job_ids = await submit_many(world, db, world.accounts, 300)
    procs = [world.start_worker("--queue", "orders"), world.start_worker("--queue", "orders")]
    final = await wait_all_terminal(db, job_ids, procs, timeout=180)

    await assert_exactly_once(world, db, job_ids, final)
    fired = (await world.admin("GET", "/_sim/faults"))["fired"]
    assert sum(fired.values()) >= 30 and fired.get("accept_timeout", 0) >= 1, fired
    complete = sum(1 for s in final.values() if s == "complete")
    ours = sum(world.orders_with_tag(kite_tag(j)) for j in job_ids)
    assert ours == complete == sum(world.counters["orders_by_tag"].values())
    adopted = await db.fetchval("SELECT count(*) FROM order_attempts WHERE job_id = ANY($1::text[])"
                                " AND outcome = 'adopted'", job_ids)
    assert adopted >= 1  # responses were lost after Kite accepted, and the retries found those orders


@pytest.mark.timeout(420)  # a generous bound on a loaded machine: 12 s of lease, then 40 orders at 400 ms each
async def test_sigkill_with_orders_in_flight_then_a_new_worker_completes_each_once(world_factory, db):
    # A short job timeout lets the next worker take a dead worker's jobs after 12 s (timeout + margin),
    # not 32; it still leaves a busy machine room to run a job in time.
    world = await world_factory(accounts=4, overrides={"order_job_timeout_seconds": 10.0})
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "latency", "delay_ms": 400})
    job_ids = await submit_many(world, db, world.accounts, 40)
    first = world.start_worker("--queue", "orders", ORDER_JOB_TIMEOUT_SECONDS=10)

    async def orders_at_kite_unanswered() -> bool:
        return held_at_kite(world) >= 1

    # The stand-in runs in this event loop: between this check and the kill nothing it holds moves on,
    # so the worker dies with calls at Kite that Kite carries out only afterwards.
    await wait_for(orders_at_kite_unanswered, every=0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    unfinished = [j for j, s in (await statuses(db, job_ids)).items() if s not in TERMINAL]
    assert unfinished, "every order finished before the kill; nothing was in flight"

    async def kite_carried_out_what_reached_it() -> bool:  # so a late arrival cannot race the new worker
        return held_at_kite(world) == 0

    await wait_for(kite_carried_out_what_reached_it)
    second = world.start_worker("--queue", "all", ORDER_JOB_TIMEOUT_SECONDS=10)
    final = await wait_all_terminal(db, job_ids, [second], timeout=240)
    assert set(final.values()) == {"complete"}
    await assert_exactly_once(world, db, job_ids, final)


async def test_sigterm_hands_back_in_flight_jobs_and_exits_cleanly(world_factory, db) -> None:
    world = await world_factory(accounts=2)
    # A call may take up to 100 s and a job 120 s: were the jobs not handed back at SIGTERM, arq would
    # keep them from the next worker for over two minutes, past every wait below.
    worker = world.start_worker("--queue", "orders", WORKER_SHUTDOWN_GRACE_SECONDS=0.2, ORDER_REQUEST_TIMEOUT=100,
                                ORDER_JOB_TIMEOUT_SECONDS=120)

    async def worker_up() -> bool:  # its heartbeat and arq's health check
        return bool(await alive(world.arq, world.names, "worker")) and bool(
            await world.arq.get(world.names.orders_queue + ":health-check"))

    await wait_for(worker_up)

    async def health_probe_passes() -> bool:  # as a PaaS probe runs it (which retries, as here)
        check = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ticker.infra.cli.main", "worker", "--queue", "orders", "--check", env=world.env(),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await check.communicate()
        return check.returncode == 0 and out.startswith(b"orders: ") and b"no live worker" not in out

    await wait_for(health_probe_passes)

    # Kite holds every placement without acting on it: whatever the worker sends stays in flight.
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "timeout", "delay_ms": HOLD_MS})
    job_ids = await submit_many(world, db, world.accounts, 6)

    async def in_flight() -> bool:  # counted as requests arrive, before the stand-in's hold
        return world.counters["requests"].get("POST /orders/{variety}", 0) >= 1

    await wait_for(in_flight)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 60) == 0, World.log_of(worker)
    assert any(s not in TERMINAL for s in (await statuses(db, job_ids)).values())  # handed back, not lost
    interrupted = await db.fetchval("SELECT count(*) FROM order_attempts WHERE job_id = ANY($1::text[])"
                                    " AND outcome = 'interrupted'", job_ids)
    assert interrupted >= 1  # a call cut short by the shutdown is recorded as such, not as a failure

    await world.admin("DELETE", "/_sim/faults")
    final = await wait_all_terminal(db, job_ids, [world.start_worker("--queue", "orders")], timeout=60)
    reasons = [(await get_dead_letter(db, j)).reason for j, s in final.items() if s == "dead_letter"]
    assert set(final.values()) == {"complete"}, reasons
    await assert_exactly_once(world, db, job_ids, final)


def most_runs_inside_one_second(runs: list[tuple[float, float]]) -> int:
    """The most job runs (start, finish) lying wholly inside some one-second window."""
    best = 0
    for start, _ in runs:
        # 2 ms narrower than a second: arq's timestamps are whole milliseconds
        best = max(best, sum(1 for s, f in runs if start <= s and f < start + 0.998))
    return best


async def test_two_workers_never_exceed_the_per_account_order_rate(world_factory, db) -> None:
    world = await world_factory(accounts=2, order_rate_limit=0)  # the stand-in only counts; we must limit
    busy, quiet = world.accounts
    job_ids = await submit_many(world, db, [busy] * 3 + [quiet], 48)
    procs = [world.start_worker("--queue", "orders"), world.start_worker("--queue", "orders")]
    final = await wait_all_terminal(db, job_ids, procs)
    assert set(final.values()) == {"complete"}
    await assert_exactly_once(world, db, job_ids, final)
    # A call is granted inside its job's run and counted against the window until it is answered,
    # also inside the run. So Kite's limit (10 orders in any second, per account) holds for whole
    # runs: no second can hold more than 10 of one account's runs, however slowly the runs went.
    # (How close to the limit two workers get is measured by `make bench`.)
    for account, every in ((busy, [0, 1, 2]), (quiet, [3])):
        mine = [j for i, j in enumerate(job_ids) if i % 4 in every]
        infos = [await Job(j, world.arq).result_info() for j in mine]
        runs = [(i.start_time.timestamp(), i.finish_time.timestamp()) for i in infos]
        assert len(runs) == len(mine) and most_runs_inside_one_second(runs) <= 10, (account, sorted(runs))
    assert world.counters["rate_limited_by_route"] == {}  # no Kite limit was ever drawn
