"""GTTs and margin previews end to end: HTTP → real `ticker web` and `ticker worker` processes → the
Kite stand-in, whose own prices fire the GTTs (moved on demand with `POST /_sim/price`)."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from tests.web.conftest import fresh_database
from tests.web.test_e2e import Stack, order_body, running_stack

WAIT = 60.0  # generous bound for anything the worker does; every wait ends as soon as it is done


@pytest_asyncio.fixture
async def live(_server_urls, redis_url, kitesim, spec_checker) -> AsyncIterator[Stack]:
    with fresh_database(_server_urls[1], f"ticker_gtt_{uuid.uuid4().hex[:8]}") as database:
        async with running_stack(database, redis_url, kitesim, spec_checker) as running:
            yield running


async def sim_admin(stack: Stack, method: str, path: str, body: dict | None = None) -> Any:
    async with aiohttp.ClientSession() as s, s.request(method, stack.sim.url + path, json=body) as r:
        assert r.status < 300, await r.text()
        return await r.json()


async def finished(stack: Stack, accepted: dict) -> dict:
    """The job's final status (long-polling its status URL)."""
    async with asyncio.timeout(WAIT):
        while True:
            status, job = await stack.call("GET", f"{accepted['status_url']}?wait=10", "/jobs/{job_id}")
            assert status == 200, job
            if job["status"] not in ("queued", "in_progress"):
                return job


async def completed(stack: Stack, accepted: dict) -> dict:
    job = await finished(stack, accepted)
    assert job["status"] == "complete", job
    return job["result"]


async def read_gtt(stack: Stack, trigger_id: int) -> dict:
    status, accepted = await stack.call("GET", f"/gtt/{trigger_id}", "/gtt/{trigger_id}")
    assert status == 202, accepted
    return (await completed(stack, accepted))["data"]


async def gtt_until(stack: Stack, trigger_id: int, status: str) -> dict:
    """Read the GTT through our API until Kite shows it in `status` (a read job per window)."""
    async with asyncio.timeout(WAIT):
        while True:
            gtt = await read_gtt(stack, trigger_id)
            if gtt["status"] == status:
                return gtt
            await asyncio.sleep(0.2)


def on_tick(price: float, tick: float = 0.05) -> float:
    return round(round(price / tick) * tick, 2)


async def priced(stack: Stack, last_price: float) -> float:
    """Move the option to about `last_price`; the price it reached."""
    moved = await sim_admin(stack, "POST", "/_sim/price", {
        "exchange": "NFO", "tradingsymbol": stack.option["tradingsymbol"], "last_price": last_price})
    return moved["last_price"]


def gtt_body(stack: Stack, last: float, triggers: list[float], legs: list[dict], **change: Any) -> dict:
    return {"type": "single" if len(triggers) == 1 else "two-leg", "exchange": "NFO",
            "tradingsymbol": stack.option["tradingsymbol"], "trigger_values": triggers, "last_price": last,
            "orders": legs, **change}


def leg(stack: Stack, side: str, price: float, lots: int = 1) -> dict:
    return {"transaction_type": side, "quantity": stack.option["lot_size"] * lots, "order_type": "LIMIT",
            "product": "NRML", "price": on_tick(price)}


async def place(stack: Stack, body: dict, key: str | None = None) -> int:
    headers = {"Idempotency-Key": key} if key else {}
    status, accepted = await stack.call("POST", "/gtt", "/gtt", json=body, headers=headers)
    assert status == 202, accepted
    result = await completed(stack, accepted)
    assert result["kind"] == "gtt_place" and result["trigger_id"] > 0, result
    return result["trigger_id"]


async def order_completes(stack: Stack, order_id: str) -> None:
    async with asyncio.timeout(WAIT):
        while stack.sim.state.orders.orders[order_id].status != "COMPLETE":
            await asyncio.sleep(0.05)


async def test_a_gtt_fires_when_the_price_crosses_its_trigger_and_its_order_completes(live: Stack) -> None:
    stack = live
    last = await priced(stack, 100.0)
    trigger = on_tick(last * 1.3)  # far enough that the random walk alone does not reach it
    key = f"gtt-{uuid.uuid4().hex}"
    trigger_id = await place(stack, gtt_body(stack, last, [trigger], [leg(stack, "BUY", trigger * 1.1)]), key)
    assert await place(stack, gtt_body(stack, last, [trigger], [leg(stack, "BUY", trigger * 1.1)]), key) \
        == trigger_id  # the same key is the same job: one GTT
    assert len(stack.sim.state.gtts.of_account(stack.sim.account.api_key)) == 1

    gtt = await read_gtt(stack, trigger_id)
    assert gtt["status"] == "active" and gtt["condition"]["trigger_values"] == [trigger]

    await priced(stack, trigger * 1.03)
    gtt = await gtt_until(stack, trigger_id, "triggered")
    result = gtt["orders"][0]["result"]
    assert result["order_result"]["status"] == "success", result
    await order_completes(stack, result["order_result"]["order_id"])

    status, listed = await stack.call("GET", "/gtt", "/gtt")
    assert status == 202
    gtts = (await completed(stack, listed))["data"]
    assert [g["id"] for g in gtts] == [trigger_id]


async def test_an_oco_fires_one_leg_only(live: Stack) -> None:
    stack = live
    last = await priced(stack, 100.0)
    stop, target = on_tick(last * 0.7), on_tick(last * 1.3)
    body = gtt_body(stack, last, [stop, target], [leg(stack, "SELL", stop * 0.95), leg(stack, "SELL", target * 0.97)])
    trigger_id = await place(stack, body)
    assert (await read_gtt(stack, trigger_id))["type"] == "two-leg"

    await priced(stack, target * 1.03)
    gtt = await gtt_until(stack, trigger_id, "triggered")
    stop_leg, target_leg = (o["result"] for o in gtt["orders"])
    assert stop_leg is None  # one cancels the other: only the target leg was placed
    assert target_leg["order_result"]["status"] == "success", target_leg
    await order_completes(stack, target_leg["order_result"]["order_id"])


async def test_modify_then_delete_a_gtt(live: Stack) -> None:
    stack = live
    last = await priced(stack, 100.0)
    trigger_id = await place(stack, gtt_body(stack, last, [on_tick(last * 1.3)], [leg(stack, "BUY", last * 1.4)]))

    moved = on_tick(last * 1.5)
    body = gtt_body(stack, last, [moved], [leg(stack, "BUY", moved * 1.1, lots=2)])
    status, accepted = await stack.call("PUT", f"/gtt/{trigger_id}", "/gtt/{trigger_id}", json=body)
    assert status == 202, accepted
    result = await completed(stack, accepted)
    assert result["kind"] == "gtt_modify" and result["trigger_id"] == trigger_id
    gtt = await read_gtt(stack, trigger_id)  # a write drops the cached reads: this one is fresh
    assert gtt["condition"]["trigger_values"] == [moved]
    assert gtt["orders"][0]["quantity"] == 2 * stack.option["lot_size"]

    status, accepted = await stack.call("DELETE", f"/gtt/{trigger_id}", "/gtt/{trigger_id}")
    assert status == 202
    assert (await completed(stack, accepted))["kind"] == "gtt_delete"
    assert (await read_gtt(stack, trigger_id))["status"] == "deleted"

    # deleting it again is a rejection by Kite: the job is dead-lettered, not retried
    status, accepted = await stack.call("DELETE", f"/gtt/{trigger_id}", "/gtt/{trigger_id}")
    job = await finished(stack, accepted)
    assert job["status"] == "dead_letter" and "cannot be deleted" in job["error"], job


async def test_bad_gtts_are_422s_naming_the_field_and_never_reach_kite(live: Stack) -> None:
    stack = live
    last = 100.0
    good = gtt_body(stack, last, [130.0], [leg(stack, "BUY", 140.0)])
    cases = [
        ({**good, "trigger_values": [130.0, 140.0]}, "trigger_values"),  # two values for a single GTT
        ({**good, "type": "two-leg", "trigger_values": [80.0, 130.0]}, "orders"),  # one order for two legs
        ({**good, "type": "two-leg", "trigger_values": [110.0, 130.0],
          "orders": [leg(stack, "SELL", 100), leg(stack, "SELL", 125)]}, "trigger_values"),  # stop above last
        ({**good, "trigger_values": [100.1]}, "trigger_values.0"),  # within 0.25% of the last price
        ({**good, "orders": [{**leg(stack, "BUY", 140.0), "quantity": stack.option["lot_size"] + 1}]},
         "orders.0.quantity"),
        ({**good, "orders": [{**leg(stack, "BUY", 140.0), "product": "MIS"}]}, "orders.0.product"),
        ({**good, "orders": [{**leg(stack, "BUY", 140.0), "price": 140.03}]}, "orders.0.price"),
        ({**good, "orders": [{**leg(stack, "BUY", 140.0), "price": None}]}, "orders.0.price"),
        ({**good, "tradingsymbol": "NIFTY99JAN99999CE"}, "tradingsymbol"),
        ({**good, "exchange": "MCX"}, "exchange"),
        ({**good, "trigger_values": [-1.0]}, "trigger_values.0"),
    ]
    for body, field in cases:
        status, err = await stack.call("POST", "/gtt", "/gtt", json=body)
        assert status == 422, (field, err)
        assert field in [d["field"] for d in err["error"]["details"]], (field, err)
    status, err = await stack.call("PUT", "/gtt/123", "/gtt/{trigger_id}", json=cases[0][0])
    assert status == 422
    status, err = await stack.call("DELETE", "/gtt/0", "/gtt/{trigger_id}")
    assert status == 422 and err["error"]["details"][0]["field"] == "trigger_id"
    counted = stack.sim.state.counters.snapshot()["requests"]
    assert not any("gtt" in route for route in counted), counted  # nothing reached the stand-in
    assert stack.sim.state.gtts.of_account(stack.sim.account.api_key) == []
    status, audit = await stack.call("GET", "/orders", "/orders")
    assert audit["orders"] == []


async def test_margin_preview_is_kites_basket_answer(live: Stack) -> None:
    stack = live
    last = await priced(stack, 100.0)
    buy = order_body(stack, order_type="LIMIT", price=on_tick(last))
    upper = stack.chain[min(len(stack.chain) - 1, stack.chain.index(stack.option) + 2)]
    sell = order_body(stack, tradingsymbol=upper["tradingsymbol"], transaction_type="SELL")
    status, accepted = await stack.call("POST", "/orders/margins", "/orders/margins",
                                        json={"orders": [buy, sell], "consider_positions": True})
    assert status == 202, accepted
    result = await completed(stack, accepted)
    assert result["account_id"] == "primary" and result["consider_positions"] is True
    for part in ("initial", "final"):
        assert {"span", "exposure", "option_premium", "total"} <= set(result[part]), result[part]
        assert math.isfinite(result[part]["total"])
    assert [o["tradingsymbol"] for o in result["orders"]] == [buy["tradingsymbol"], sell["tradingsymbol"]]
    assert result["orders"][0]["option_premium"] > 0  # a bought option costs its premium
    assert result["final"]["total"] <= result["initial"]["total"] + 1e-6  # the spread is hedged
    assert "total" in result["charges"]
    assert stack.sim.state.orders.orders_of(stack.sim.account.api_key) == []  # a preview places nothing

    status, err = await stack.call("POST", "/orders/margins", "/orders/margins",
                                   json={"orders": [buy, {**sell, "quantity": 1}]})
    assert status == 422 and err["error"]["details"][0]["field"] == "orders.1.quantity"


async def test_gtt_writes_retry_transient_failures_and_adopt_a_gtt_whose_answer_was_lost(live: Stack) -> None:
    stack = live
    last = await priced(stack, 100.0)
    # two 503s, then Kite answers: one GTT, placed on the third attempt
    await sim_admin(stack, "POST", "/_sim/faults", {"route": "POST /gtt/triggers", "kind": "503", "times": 2})
    body = gtt_body(stack, last, [on_tick(last * 1.3)], [leg(stack, "BUY", last * 1.4)])
    status, accepted = await stack.call("POST", "/gtt", "/gtt", json=body)
    result = await completed(stack, accepted)
    assert result["attempts"] == 3 and result["adopted"] is False

    # the same GTT again, but Kite's answer is lost (the connection drops after it placed it): the retry
    # finds it by content, and not the first one, which another job already recorded as its own
    await sim_admin(stack, "POST", "/_sim/faults", {"route": "POST /gtt/triggers", "kind": "accept_drop",
                                                     "times": 1})
    status, accepted = await stack.call("POST", "/gtt", "/gtt", json=body)
    adopted = await completed(stack, accepted)
    assert adopted["adopted"] is True and adopted["attempts"] == 2
    assert adopted["trigger_id"] != result["trigger_id"]
    gtts = stack.sim.state.gtts.of_account(stack.sim.account.api_key)
    assert sorted(g["id"] for g in gtts) == sorted([result["trigger_id"], adopted["trigger_id"]])
    placed = stack.sim.state.counters.snapshot()["requests"]["POST /gtt/triggers"]
    assert placed == 4  # 503, 503, placed, placed-but-dropped: never a second call for the adopted one
