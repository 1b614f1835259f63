"""Order jobs against the stand-in, run by in-process workers (burst) on real Redis and Postgres.

Orders, baskets and replays go in through the web app (`world.api`), the path production takes."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import redis as sync_redis
from arq.constants import retry_key_prefix
from arq.utils import timestamp_ms

from ticker.core.contracts import JOB_REFRESH_TOKENS
from ticker.core.orders import BasketRequest, CancelRequest, ModifyRequest, OrderRequest, kite_tag
from ticker.infra.kite.breaker import CircuitBreaker
from ticker.infra.orders.audit_trail import attempts_of, get_order
from ticker.infra.queue.status import basket_status, job_status
from ticker.infra.stores.deadletters import get_dead_letter, list_dead_letters
from ticker.jobs.worker import run

from .conftest import HOLD_MS, World, run_burst, wait_for


def option_order(world: World, account: str, **kw) -> OrderRequest:
    base = dict(account_id=account, exchange="NFO", tradingsymbol=world.option.tradingsymbol,
                transaction_type="BUY", quantity=world.option.lot_size, product="NRML", order_type="MARKET")
    return OrderRequest(**{**base, **kw})


async def place(world: World, db, req: OrderRequest, key: str | None = None) -> str:
    return await world.api.place_id(req, key)


async def test_valid_order_completes_with_a_kite_order_id(world, db) -> None:
    job_id = await place(world, db, option_order(world, "sim1", tag="client7"))
    assert (await job_status(world.arq, db, world.names, job_id)).status == "queued"
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, job_id)
    assert status.status == "complete", status
    assert status.result["kite_order_id"] and status.result["adopted"] is False
    assert status.result["client_tag"] == "client7" and status.attempts == 1
    assert world.orders_with_tag(kite_tag(job_id)) == 1
    record = await get_order(db, job_id)
    assert record.kite_order_id == status.result["kite_order_id"] and record.account_id == "sim1"
    (attempt,) = await attempts_of(db, job_id)
    assert attempt.outcome == "ok" and attempt.latency_ms > 0


async def test_same_idempotency_key_is_one_job_and_one_order(world, db) -> None:
    req, key = option_order(world, "sim2"), uuid.uuid4().hex
    first = await world.api.place(req, key)
    second = await world.api.place(req, key)
    assert first["job_id"] == second["job_id"] and second["duplicate"] and not first["duplicate"]
    await run_burst(world)
    assert world.orders_with_tag(kite_tag(first["job_id"])) == 1


async def test_order_kite_rejects_fails_with_kites_message_into_the_dlq(world, db) -> None:
    # An instrument we know but the exchange does not: our checks pass, Kite refuses.
    await db.execute(
        "INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, tick_size, lot_size,"
        " instrument_type, segment, exchange) VALUES (4294967041, 16777215, 'GONE', 0.05, 1, 'EQ', 'NSE', 'NSE')"
        " ON CONFLICT DO NOTHING")
    req = OrderRequest(account_id="sim1", exchange="NSE", tradingsymbol="GONE", transaction_type="BUY",
                       quantity=1, product="CNC", order_type="MARKET")
    job_id = await place(world, db, req)
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, job_id)
    assert status.status == "dead_letter" and status.attempts == 1
    assert "InputException" in status.error and "does not exist" in status.error
    letter = await get_dead_letter(db, job_id)
    assert letter.reason == status.error and letter.errors[0]["outcome"] == "rejected"
    assert letter.account_id == "sim1"


async def test_invalid_payload_in_the_job_never_reaches_kite(world, db) -> None:
    # Enqueued directly (bypassing submission checks): the job validates again.
    from ticker.core.orders import plan_place
    from ticker.infra.queue.enqueue import enqueue

    plan = plan_place(option_order(world, "sim1", quantity=world.option.lot_size + 1), uuid.uuid4().hex)
    await enqueue(world.arq, world.names, plan.job_name, plan.payload, job_id=plan.job_id)
    attempts_before = sum(world.counters["order_attempts"].values())
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, plan.job_id)
    assert status.status == "dead_letter"
    assert status.error == f"quantity: Quantity should be a multiple of lot size {world.option.lot_size}."
    assert sum(world.counters["order_attempts"].values()) == attempts_before


async def test_exhausted_retries_dead_letter_then_replay_places_once(world, db) -> None:
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "503", "times": 5})
    job_id = await place(world, db, option_order(world, "sim2"))
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, job_id)
    assert status.status == "dead_letter" and status.attempts == 5
    assert status.error.startswith("gave up after 5 attempts: NetworkException")
    letter = await get_dead_letter(db, job_id)
    assert [e["outcome"] for e in letter.errors] == ["transient"] * 5
    assert any(d.job_id == job_id for d in await list_dead_letters(db, pending_only=True))

    replay = await world.api.replay(letter.id)
    again = await world.api.replay(letter.id, replay_number=1)
    assert not replay["duplicate"] and again["duplicate"] and replay["job_id"] == again["job_id"] != job_id
    await run_burst(world)
    replayed = await job_status(world.arq, db, world.names, replay["job_id"])
    assert replayed.status == "complete", replayed
    assert world.orders_with_tag(kite_tag(replay["job_id"])) == 1
    assert world.orders_with_tag(kite_tag(job_id)) == 0


async def test_response_lost_after_kite_accepted_is_adopted_not_placed_again(world, db) -> None:
    await world.admin("POST", "/_sim/faults",
                      {"route": "POST /orders/*", "kind": "accept_timeout", "times": 1, "delay_ms": HOLD_MS})
    job_id = await place(world, db, option_order(world, "sim1"))
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, job_id)
    assert status.status == "complete" and status.result["adopted"] is True and status.attempts == 2
    assert status.error is None  # the lost response is history in the attempts, not the job's error
    assert world.orders_with_tag(kite_tag(job_id)) == 1
    outcomes = [a.outcome for a in await attempts_of(db, job_id)]
    assert outcomes == ["transient", "adopted"]


async def test_modify_and_cancel_a_resting_order(world, db) -> None:
    low = round(max(world.option.tick_size, 0.05) * 2, 2)  # far below the market: the order rests
    job_id = await place(world, db, option_order(world, "sim1", order_type="LIMIT", price=low))
    await run_burst(world)
    order_id = (await job_status(world.arq, db, world.names, job_id)).result["kite_order_id"]

    mod = await world.api.modify(ModifyRequest(account_id="sim1", order_id=order_id, price=round(low * 2, 2)))
    await run_burst(world)
    assert (await job_status(world.arq, db, world.names, mod["job_id"])).status == "complete"

    await world.admin("POST", "/_sim/faults",
                      {"route": "DELETE /orders/*", "kind": "accept_timeout", "times": 1, "delay_ms": HOLD_MS})
    cancel = await world.api.cancel(CancelRequest(account_id="sim1", order_id=order_id))
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, cancel["job_id"])
    assert status.status == "complete" and status.result["kite_status"] == "CANCELLED"
    assert status.result["adopted"] is True  # the first cancel went through; its answer was lost
    (sim_order,) = world.sim.state.orders_with_tag(kite_tag(job_id))
    assert sim_order["status"] == "CANCELLED" and sim_order["price"] == round(low * 2, 2)


async def test_basket_legs_are_separate_jobs_on_the_named_account(world, db) -> None:
    basket = BasketRequest(account_id="sim2", legs=[option_order(world, None), option_order(world, None,
                                                                                          transaction_type="SELL")])
    accepted = await world.api.basket(basket, uuid.uuid4().hex)
    await run_burst(world)
    summary = await basket_status(world.arq, db, world.names, accepted["basket_id"])
    assert summary.status == "complete" and summary.counts == {"complete": 2}
    assert {leg.result["account_id"] for leg in summary.legs} == {"sim2"}
    assert all(world.orders_with_tag(kite_tag(j["job_id"])) == 1 for j in accepted["jobs"])


@dataclass(frozen=True)
class Arrival:
    """A placement as it reached the stand-in, with the account's breaker keys at that moment."""

    failed: bool  # the stand-in answered it with the outage's 503
    failures: int  # consecutive failures the breaker had counted
    open: bool  # the breaker's open period was running
    probe: bool  # the half-open probe slot was taken (by this call: only a probe takes it)


def watch_placements(world: World, account_id: str) -> list[Arrival]:
    """Record every placement reaching the stand-in with the breaker's state at that moment. The
    stand-in runs in this event loop, so the breaker keys are read synchronously, before the request
    is answered: what the record says is what was true while the call was at Kite."""
    client = sync_redis.Redis.from_url(world.settings.redis_url)
    keys = [world.names.key("breaker", account_id, part) for part in ("failures", "open", "probe")]
    faults = world.sim.state.faults
    decide, seen = faults.decide, []

    def observed(route_key: str) -> Any:
        decision = decide(route_key)
        if route_key == "POST /orders/{variety}":
            failures, open_, probe = client.mget(keys)
            seen.append(Arrival(decision.before is not None, int(failures or 0), open_ is not None,
                                probe is not None))
        return decision

    faults.decide = observed  # an observer: the stand-in decides exactly as before
    return seen


async def arq_tries(world: World, job_id: str) -> int:
    """How often a worker has taken the job so far (arq counts each run, hand-backs included)."""
    return int(await world.arq.get(retry_key_prefix + job_id) or 0)


async def test_open_breaker_makes_queued_orders_wait_instead_of_hammering(world_factory, db) -> None:
    threshold = 2
    world = await world_factory(overrides={"breaker_failure_threshold": threshold, "breaker_open_seconds": 0.3,
                                           "order_max_tries": 1000})  # an outage of any length: no dead letters
    breaker = CircuitBreaker(world.arq, world.names, world.settings)
    arrivals = watch_placements(world, "sim1")
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "503"})
    stop = asyncio.Event()
    worker = asyncio.create_task(run(world.settings, ("orders",), stop=stop))
    try:
        # One order alone opens the breaker, so no call is still on its way from before it opened.
        first = await place(world, db, option_order(world, "sim1"))

        async def breaker_opened() -> bool:
            return await breaker.state("sim1") != "closed"

        await wait_for(breaker_opened)
        queued = [await place(world, db, option_order(world, "sim1")) for _ in range(5)]

        async def queued_orders_waited_through_failed_probes() -> bool:
            attempts = dict(await db.fetch("SELECT job_id, attempts FROM order_requests WHERE job_id = ANY($1)",
                                           queued))
            waited = [await arq_tries(world, j) >= attempts.get(j, 0) + 2 for j in queued]
            return all(waited) and sum(a.failed for a in arrivals) >= threshold + 2

        await wait_for(queued_orders_waited_through_failed_probes)
        await world.admin("DELETE", "/_sim/faults")  # Kite recovers

        async def all_complete() -> bool:
            rows = await db.fetch("SELECT status FROM order_requests WHERE job_id = ANY($1)", [first, *queued])
            return len(rows) == 6 and all(r["status"] == "complete" for r in rows)

        await wait_for(all_complete)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 60)

    failed, answered = [a for a in arrivals if a.failed], [a for a in arrivals if not a.failed]
    # The lone order's calls until the breaker opened; from then on, while Kite kept failing, each
    # call was the half-open probe (it held the one probe slot) and none came during an open period.
    assert not any(a.open or a.probe for a in failed[:threshold]), arrivals
    assert failed[threshold:] and all(a.probe and not a.open and a.failures >= threshold
                                      for a in failed[threshold:]), arrivals
    # Once Kite answers, the probe's success closes the breaker and every order goes through, once.
    assert answered[0].probe and not any(a.open or a.probe or a.failures for a in answered[1:]), arrivals
    assert len(answered) == 6
    for job_id in (first, *queued):
        assert (await job_status(world.arq, db, world.names, job_id)).status == "complete"
        assert world.orders_with_tag(kite_tag(job_id)) == 1


async def test_malformed_payload_or_unknown_account_is_dead_lettered_with_the_reason(world, db) -> None:
    from ticker.core.orders import plan_place
    from ticker.infra.queue.enqueue import enqueue

    broken = "ord-place-" + uuid.uuid4().hex[:24]
    await enqueue(world.arq, world.names, "place_order", {"order": {"exchange": "NFO"}}, job_id=broken)
    nobody = plan_place(option_order(world, "nobody"), uuid.uuid4().hex)
    await enqueue(world.arq, world.names, nobody.job_name, nobody.payload, job_id=nobody.job_id)
    await run_burst(world)
    first = await job_status(world.arq, db, world.names, broken)
    assert first.status == "dead_letter" and first.error.startswith("invalid payload: order.tradingsymbol")
    second = await job_status(world.arq, db, world.names, nobody.job_id)
    assert second.status == "dead_letter" and "unknown or inactive Kite account 'nobody'" in second.error
    assert world.orders_with_tag(kite_tag(nobody.job_id)) == 0


async def _set_token(world: World, db, account_id: str, token: str) -> None:
    from ticker.infra.stores.accounts import account_store

    await account_store(db, world.settings).set_token(account_id, token)


async def _refresh_asked(world: World, account_id: str) -> bool:
    """Whether an order job asked for a token refresh of the account: a refresh job for it is queued
    on this world's default queue (no worker serves that queue here)."""
    jobs = await world.arq.queued_jobs(queue_name=world.names.default_queue)
    return any(j.function == JOB_REFRESH_TOKENS and j.args and j.args[0].get("account_id") == account_id
               for j in jobs)


async def test_rejected_token_asks_for_a_refresh_and_uses_the_new_token(world_factory, db) -> None:
    # The order waits this long for the refresh; the test ends the wait itself once the token is in.
    world = await world_factory(overrides={"order_token_refresh_wait_seconds": 600})
    await _set_token(world, db, "sim1", "stale-token")
    job_id = await place(world, db, option_order(world, "sim1"))

    async def order_waits() -> bool:  # handed back to the queue, due only after the refresh wait
        due = await world.arq.zscore(world.names.orders_queue, job_id)
        waiting = await db.fetchval("SELECT status FROM order_requests WHERE job_id = $1", job_id) == "retrying"
        return waiting and due is not None and due > timestamp_ms() + 60_000

    async def refresh_lands() -> None:  # what the token refresh job does, once the order waits for it
        await wait_for(order_waits, every=0.01)
        await _set_token(world, db, "sim1", world.sim.accounts[0].access_token)
        await world.arq.zadd(world.names.orders_queue, {job_id: timestamp_ms()})  # its wait is over

    refresher = asyncio.create_task(refresh_lands())
    await run_burst(world)
    await refresher
    status = await job_status(world.arq, db, world.names, job_id)
    outcomes = [a.outcome for a in await attempts_of(db, job_id)]
    assert status.status == "complete" and outcomes == ["token", "ok"]
    assert world.orders_with_tag(kite_tag(job_id)) == 1
    assert await _refresh_asked(world, "sim1")


async def test_token_still_rejected_after_the_refresh_wait_is_dead_lettered(world_factory, db) -> None:
    world = await world_factory(overrides={"order_token_refresh_wait_seconds": 0.05})
    await _set_token(world, db, "sim2", "stale-token")
    job_id = await place(world, db, option_order(world, "sim2"))
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, job_id)
    assert status.status == "dead_letter" and status.attempts == 2
    assert status.error.startswith("TokenException") and "needs a refresh" in status.error
    assert world.orders_with_tag(kite_tag(job_id)) == 0
    assert await _refresh_asked(world, "sim2")


async def test_uncertain_outcome_is_said_and_a_replay_adopts_what_reached_kite(world, db) -> None:
    # Every placement answer is lost after Kite accepted, and the order book cannot be read: the job
    # cannot know, says so, and the replay (which carries the old tag) finds the order instead of
    # placing a second one.
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "accept_timeout",
                                               "times": 1, "delay_ms": HOLD_MS})
    await world.admin("POST", "/_sim/faults", {"route": "GET /orders", "kind": "500"})
    job_id = await place(world, db, option_order(world, "sim1"))
    await run_burst(world)
    status = await job_status(world.arq, db, world.names, job_id)
    assert status.status == "dead_letter" and f"its tag is {kite_tag(job_id)}" in status.error
    assert world.orders_with_tag(kite_tag(job_id)) == 1

    await world.admin("DELETE", "/_sim/faults")
    replay = await world.api.replay((await get_dead_letter(db, job_id)).id)
    await run_burst(world)
    replayed = await job_status(world.arq, db, world.names, replay["job_id"])
    assert replayed.status == "complete" and replayed.result["adopted"] is True
    assert world.orders_with_tag(kite_tag(job_id)) == 1 and world.orders_with_tag(kite_tag(replay["job_id"])) == 0
