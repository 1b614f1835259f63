"""Order jobs against the stand-in, run by in-process workers (burst) on real Redis and Postgres."""

from __future__ import annotations

import asyncio
import time
import uuid

from ticker.core.orders import BasketRequest, CancelRequest, ModifyRequest, OrderRequest, kite_tag
from ticker.infra.deadletters import get_dead_letter, list_dead_letters, replay_dead_letter
from ticker.infra.jobstatus import basket_status, job_status
from ticker.infra.order_audit import attempts_of, get_order
from ticker.infra.order_submit import submit_basket, submit_cancel, submit_modify, submit_place

from .conftest import World, run_burst, wait_for


def option_order(world: World, account: str, **kw) -> OrderRequest:
    base = dict(account_id=account, exchange="NFO", tradingsymbol=world.option.tradingsymbol,
                transaction_type="BUY", quantity=world.option.lot_size, product="NRML", order_type="MARKET")
    return OrderRequest(**{**base, **kw})


async def place(world: World, db, names, req: OrderRequest, key: str | None = None) -> str:
    return (await submit_place(world.arq, db, names, world.settings, req, key or uuid.uuid4().hex)).job_id


async def test_valid_order_completes_with_a_kite_order_id(world, db, names) -> None:
    job_id = await place(world, db, names, option_order(world, "sim1", tag="client7"))
    assert (await job_status(world.arq, db, names, job_id)).status == "queued"
    await run_burst(world)
    status = await job_status(world.arq, db, names, job_id)
    assert status.status == "complete", status
    assert status.result["kite_order_id"] and status.result["adopted"] is False
    assert status.result["client_tag"] == "client7" and status.attempts == 1
    assert world.orders_with_tag(kite_tag(job_id)) == 1
    record = await get_order(db, job_id)
    assert record.kite_order_id == status.result["kite_order_id"] and record.account_id == "sim1"
    (attempt,) = await attempts_of(db, job_id)
    assert attempt.outcome == "ok" and attempt.latency_ms > 0


async def test_same_idempotency_key_is_one_job_and_one_order(world, db, names) -> None:
    req, key = option_order(world, "sim2"), uuid.uuid4().hex
    first = await submit_place(world.arq, db, names, world.settings, req, key)
    second = await submit_place(world.arq, db, names, world.settings, req, key)
    assert first.job_id == second.job_id and second.duplicate and not first.duplicate
    await run_burst(world)
    assert world.orders_with_tag(kite_tag(first.job_id)) == 1


async def test_order_kite_rejects_fails_with_kites_message_into_the_dlq(world, db, names) -> None:
    # An instrument we know but the exchange does not: our checks pass, Kite refuses.
    await db.execute(
        "INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, tick_size, lot_size,"
        " instrument_type, segment, exchange) VALUES (4294967041, 16777215, 'GONE', 0.05, 1, 'EQ', 'NSE', 'NSE')"
        " ON CONFLICT DO NOTHING")
    req = OrderRequest(account_id="sim1", exchange="NSE", tradingsymbol="GONE", transaction_type="BUY",
                       quantity=1, product="CNC", order_type="MARKET")
    job_id = await place(world, db, names, req)
    await run_burst(world)
    status = await job_status(world.arq, db, names, job_id)
    assert status.status == "dead_letter" and status.attempts == 1
    assert "InputException" in status.error and "does not exist" in status.error
    letter = await get_dead_letter(db, job_id)
    assert letter.reason == status.error and letter.errors[0]["outcome"] == "rejected"
    assert letter.account_id == "sim1"


async def test_invalid_payload_in_the_job_never_reaches_kite(world, db, names) -> None:
    # Enqueued directly (bypassing submission checks): the job validates again.
    from ticker.core.orders import plan_place
    from ticker.infra.queue import enqueue

    plan = plan_place(option_order(world, "sim1", quantity=world.option.lot_size + 1), uuid.uuid4().hex)
    await enqueue(world.arq, names, plan.job_name, plan.payload, job_id=plan.job_id)
    attempts_before = sum(world.counters["order_attempts"].values())
    await run_burst(world)
    status = await job_status(world.arq, db, names, plan.job_id)
    assert status.status == "dead_letter"
    assert status.error == f"quantity: Quantity should be a multiple of lot size {world.option.lot_size}."
    assert sum(world.counters["order_attempts"].values()) == attempts_before


async def test_exhausted_retries_dead_letter_then_replay_places_once(world, db, names) -> None:
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "503", "times": 5})
    job_id = await place(world, db, names, option_order(world, "sim2"))
    await run_burst(world)
    status = await job_status(world.arq, db, names, job_id)
    assert status.status == "dead_letter" and status.attempts == 5
    assert status.error.startswith("gave up after 5 attempts: NetworkException")
    letter = await get_dead_letter(db, job_id)
    assert [e["outcome"] for e in letter.errors] == ["transient"] * 5
    assert any(d.job_id == job_id for d in await list_dead_letters(db, pending_only=True))

    replay = await replay_dead_letter(db, world.arq, names, letter.id)
    again = await replay_dead_letter(db, world.arq, names, letter.id, replay_number=1)
    assert replay.enqueued and not again.enqueued and replay.job_id == again.job_id != job_id
    await run_burst(world)
    replayed = await job_status(world.arq, db, names, replay.job_id)
    assert replayed.status == "complete", replayed
    assert world.orders_with_tag(kite_tag(replay.job_id)) == 1
    assert world.orders_with_tag(kite_tag(job_id)) == 0


async def test_response_lost_after_kite_accepted_is_adopted_not_placed_again(world, db, names) -> None:
    await world.admin("POST", "/_sim/faults",
                      {"route": "POST /orders/*", "kind": "accept_timeout", "times": 1, "delay_ms": 1500})
    job_id = await place(world, db, names, option_order(world, "sim1"))
    await run_burst(world)
    status = await job_status(world.arq, db, names, job_id)
    assert status.status == "complete" and status.result["adopted"] is True and status.attempts == 2
    assert status.error is None  # the lost response is history in the attempts, not the job's error
    assert world.orders_with_tag(kite_tag(job_id)) == 1
    outcomes = [a.outcome for a in await attempts_of(db, job_id)]
    assert outcomes == ["transient", "adopted"]


async def test_modify_and_cancel_a_resting_order(world, db, names) -> None:
    low = round(max(world.option.tick_size, 0.05) * 2, 2)  # far below the market: the order rests
    job_id = await place(world, db, names, option_order(world, "sim1", order_type="LIMIT", price=low))
    await run_burst(world)
    order_id = (await job_status(world.arq, db, names, job_id)).result["kite_order_id"]

    mod = await submit_modify(world.arq, db, names, world.settings,
                              ModifyRequest(account_id="sim1", order_id=order_id, price=round(low * 2, 2)))
    await run_burst(world)
    assert (await job_status(world.arq, db, names, mod.job_id)).status == "complete"

    await world.admin("POST", "/_sim/faults",
                      {"route": "DELETE /orders/*", "kind": "accept_timeout", "times": 1, "delay_ms": 1500})
    cancel = await submit_cancel(world.arq, db, names, world.settings,
                                 CancelRequest(account_id="sim1", order_id=order_id))
    await run_burst(world)
    status = await job_status(world.arq, db, names, cancel.job_id)
    assert status.status == "complete" and status.result["kite_status"] == "CANCELLED"
    assert status.result["adopted"] is True  # the first cancel went through; its answer was lost
    (sim_order,) = world.sim.state.orders_with_tag(kite_tag(job_id))
    assert sim_order["status"] == "CANCELLED" and sim_order["price"] == round(low * 2, 2)


async def test_basket_legs_are_separate_jobs_on_the_named_account(world, db, names) -> None:
    basket = BasketRequest(account_id="sim2", legs=[option_order(world, None), option_order(world, None,
                                                                                          transaction_type="SELL")])
    accepted = await submit_basket(world.arq, db, names, world.settings, basket, uuid.uuid4().hex)
    await run_burst(world)
    summary = await basket_status(world.arq, db, names, accepted.basket_id)
    assert summary.status == "complete" and summary.counts == {"complete": 2}
    assert {leg.result["account_id"] for leg in summary.legs} == {"sim2"}
    assert all(world.orders_with_tag(kite_tag(j)) == 1 for j in accepted.job_ids)


async def test_open_breaker_makes_queued_orders_wait_instead_of_hammering(world_factory, db, names) -> None:
    world = await world_factory(overrides={"breaker_failure_threshold": 2, "breaker_open_seconds": 0.3,
                                           "order_max_tries": 10})
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "503"})
    job_ids = [await place(world, db, names, option_order(world, "sim1")) for _ in range(6)]

    async def kite_recovers() -> None:
        await asyncio.sleep(1.0)
        await world.admin("DELETE", "/_sim/faults")

    healer = asyncio.create_task(kite_recovers())
    await run_burst(world)
    await healer
    failed_posts = world.counters["requests"]["POST /orders/{variety}"] - len(job_ids)
    # Without the breaker each of the 6 orders retries on its own schedule (about 30 calls in that
    # second); with it, the first wave fails and then only one probe per open period goes out.
    assert 6 <= failed_posts <= 14, failed_posts
    for job_id in job_ids:
        assert (await job_status(world.arq, db, names, job_id)).status == "complete"
        assert world.orders_with_tag(kite_tag(job_id)) == 1


async def test_malformed_payload_or_unknown_account_is_dead_lettered_with_the_reason(world, db, names) -> None:
    from ticker.core.orders import plan_place
    from ticker.infra.queue import enqueue

    broken = "ord-place-" + uuid.uuid4().hex[:24]
    await enqueue(world.arq, names, "place_order", {"order": {"exchange": "NFO"}}, job_id=broken)
    nobody = plan_place(option_order(world, "nobody"), uuid.uuid4().hex)
    await enqueue(world.arq, names, nobody.job_name, nobody.payload, job_id=nobody.job_id)
    await run_burst(world)
    first = await job_status(world.arq, db, names, broken)
    assert first.status == "dead_letter" and first.error.startswith("invalid payload: order.tradingsymbol")
    second = await job_status(world.arq, db, names, nobody.job_id)
    assert second.status == "dead_letter" and "unknown or inactive Kite account 'nobody'" in second.error
    assert world.orders_with_tag(kite_tag(nobody.job_id)) == 0


async def _set_token(world: World, db, account_id: str, token: str) -> None:
    from ticker.infra.accounts import account_store

    await account_store(db, world.settings).set_token(account_id, token)


async def _take_back_refresh(world: World, db, names, account_id: str) -> list[str]:
    """The token refresh jobs order jobs asked for, cancelled so no later worker in the session runs one."""
    from ticker.infra.jobstatus import cancel_job
    from ticker.infra.queue import derived_job_id

    minute = int(time.time() // 60)
    asked = [derived_job_id("order-token-refresh", account_id, m) for m in (minute, minute - 1)]
    found = [j for j in asked if await job_status(world.arq, db, names, j)]
    for job_id in found:
        await cancel_job(world.arq, db, names, job_id)
    return found


async def test_rejected_token_asks_for_a_refresh_and_uses_the_new_token(world_factory, db, names) -> None:
    world = await world_factory(overrides={"order_token_refresh_wait_seconds": 0.3})
    await _set_token(world, db, "sim1", "stale-token")
    job_id = await place(world, db, names, option_order(world, "sim1"))

    async def order_waits() -> bool:
        return await db.fetchval("SELECT status FROM order_requests WHERE job_id = $1", job_id) == "retrying"

    async def refresh_lands() -> None:  # what the token refresh job does, once the order waits for it
        await wait_for(order_waits, timeout=30, every=0.01)
        await _set_token(world, db, "sim1", world.sim.accounts[0].access_token)

    refresher = asyncio.create_task(refresh_lands())
    await run_burst(world)
    await refresher
    status = await job_status(world.arq, db, names, job_id)
    outcomes = [a.outcome for a in await attempts_of(db, job_id)]
    assert status.status == "complete" and outcomes == ["token", "ok"]
    assert world.orders_with_tag(kite_tag(job_id)) == 1
    assert await _take_back_refresh(world, db, names, "sim1")  # the refresh was asked for


async def test_token_still_rejected_after_the_refresh_wait_is_dead_lettered(world_factory, db, names) -> None:
    world = await world_factory(overrides={"order_token_refresh_wait_seconds": 0.05})
    await _set_token(world, db, "sim2", "stale-token")
    job_id = await place(world, db, names, option_order(world, "sim2"))
    await run_burst(world)
    status = await job_status(world.arq, db, names, job_id)
    assert status.status == "dead_letter" and status.attempts == 2
    assert status.error.startswith("TokenException") and "needs a refresh" in status.error
    assert world.orders_with_tag(kite_tag(job_id)) == 0
    assert await _take_back_refresh(world, db, names, "sim2")


async def test_uncertain_outcome_is_said_and_a_replay_adopts_what_reached_kite(world, db, names) -> None:
    # Every placement answer is lost after Kite accepted, and the order book cannot be read: the job
    # cannot know, says so, and the replay (which carries the old tag) finds the order instead of
    # placing a second one.
    await world.admin("POST", "/_sim/faults", {"route": "POST /orders/*", "kind": "accept_timeout",
                                               "times": 1, "delay_ms": 1500})
    await world.admin("POST", "/_sim/faults", {"route": "GET /orders", "kind": "500"})
    job_id = await place(world, db, names, option_order(world, "sim1"))
    await run_burst(world)
    status = await job_status(world.arq, db, names, job_id)
    assert status.status == "dead_letter" and f"its tag is {kite_tag(job_id)}" in status.error
    assert world.orders_with_tag(kite_tag(job_id)) == 1

    await world.admin("DELETE", "/_sim/faults")
    replay = await replay_dead_letter(db, world.arq, names, job_id)
    await run_burst(world)
    replayed = await job_status(world.arq, db, names, replay.job_id)
    assert replayed.status == "complete" and replayed.result["adopted"] is True
    assert world.orders_with_tag(kite_tag(job_id)) == 1 and world.orders_with_tag(kite_tag(replay.job_id)) == 0
