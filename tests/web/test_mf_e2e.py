"""Mutual funds end to end: HTTP -> real `ticker web` and `ticker worker` processes -> the Kite
stand-in, whose NAV is published on demand (`POST /_sim/mf/nav`) so an order completes when the test
says. A purchase goes from POST to COMPLETE and into `/mf/holdings`; a SIP goes from POST to ACTIVE and
into `/mf/sips`; amounts Kite would refuse are 422s that never reach the stand-in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio

from tests.web.conftest import fresh_database
from tests.web.test_e2e import Stack, running_stack
from tests.web.test_gtt_e2e import completed, finished, sim_admin

FUND = "INF000S01013"  # the stand-in's "Sim Bluechip Fund": minimum 500, multiples of 1, additional 100
STEPPED = "INF000S01047"  # minimum 5000 in multiples of 100


@pytest_asyncio.fixture
async def live(_server_urls, redis_url, kitesim, spec_checker) -> AsyncIterator[Stack]:
    with fresh_database(_server_urls[1], f"ticker_mf_{uuid.uuid4().hex[:8]}") as database:
        async with running_stack(database, redis_url, kitesim, spec_checker) as running:
            yield running


async def fresh(stack: Stack, path: str) -> dict:
    """A snapshot fetched after now: `?refresh=true` (202 + the refresh job), then the read."""
    status, accepted = await stack.call("GET", f"{path}?refresh=true", path)
    assert status == 202, accepted
    await completed(stack, accepted)
    status, body = await stack.call("GET", path, path)
    assert status == 200, body
    return body


async def write(stack: Stack, method: str, path: str, template: str, body: dict | None = None,
                key: str | None = None) -> dict:
    headers = {"Idempotency-Key": key} if key else {}
    status, accepted = await stack.call(method, path, template, json=body, headers=headers)
    assert status == 202, accepted
    return accepted


async def test_a_purchase_completes_at_the_next_nav_and_shows_in_holdings(live: Stack) -> None:
    stack = live
    funds = (await fresh(stack, "/mf/instruments"))["data"]
    assert funds and FUND in {f["tradingsymbol"] for f in funds}

    key = f"mf-{uuid.uuid4().hex}"
    body = {"tradingsymbol": FUND, "transaction_type": "BUY", "amount": 5000}
    accepted = await write(stack, "POST", "/mf/orders", "/mf/orders", body, key)
    result = await completed(stack, accepted)
    assert result["kind"] == "mf_place" and result["kite_status"] == "OPEN", result
    order_id = result["order_id"]
    again = await write(stack, "POST", "/mf/orders", "/mf/orders", body, key)
    assert again["job_id"] == accepted["job_id"] and again["duplicate"]  # one key, one order
    assert [o.order_id for o in stack.sim.state.mf.orders.values()] == [order_id]

    # a refresh asked for now fetches after the job's effect: one read shows it
    orders = (await fresh(stack, "/mf/orders"))["data"]
    assert [(o["order_id"], o["status"]) for o in orders] == [(order_id, "OPEN")]

    await sim_admin(stack, "POST", "/_sim/mf/nav", {"navs": {FUND: 50.0}})
    [done] = (await fresh(stack, "/mf/orders"))["data"]
    assert (done["order_id"], done["status"]) == (order_id, "COMPLETE")
    assert done["quantity"] == 100.0 and done["average_price"] == 50.0
    holdings = (await fresh(stack, "/mf/holdings"))["data"]
    [held] = [h for h in holdings if h["tradingsymbol"] == FUND]
    assert held["quantity"] == 100.0 and held["folio"] == done["folio"]

    # a redemption of more units than the fund allows in steps of: a 422 from its rules
    status, err = await stack.call("POST", "/mf/orders", "/mf/orders",
                                   json={"tradingsymbol": FUND, "transaction_type": "SELL", "quantity": 1.0005})
    assert status == 422 and err["error"]["details"][0]["field"] == "quantity", err


async def test_a_sip_is_active_in_the_sip_list_then_paused_and_cancelled(live: Stack) -> None:
    stack = live
    body = {"tradingsymbol": FUND, "amount": 1000, "instalments": 12, "frequency": "monthly", "instalment_day": 5}
    result = await completed(stack, await write(stack, "POST", "/mf/sips", "/mf/sips", body))
    assert result["kind"] == "sip_place" and result["kite_status"] == "ACTIVE", result
    sip_id = result["sip_id"]
    [sip] = (await fresh(stack, "/mf/sips"))["data"]
    assert sip["sip_id"] == sip_id
    assert (sip["status"], sip["frequency"], sip["instalment_day"], sip["instalment_amount"]) == \
        ("ACTIVE", "monthly", 5, 1000.0)

    path = f"/mf/sips/{sip_id}"
    await completed(stack, await write(stack, "PUT", path, "/mf/sips/{sip_id}", {"status": "PAUSED", "amount": 2000}))
    assert stack.sim.state.mf.sips[sip_id].status == "PAUSED"
    [sip] = (await fresh(stack, "/mf/sips"))["data"]
    assert (sip["status"], sip["instalment_amount"]) == ("PAUSED", 2000.0)
    await completed(stack, await write(stack, "DELETE", path, "/mf/sips/{sip_id}"))
    assert stack.sim.state.mf.sips[sip_id].status == "CANCELLED"
    status, audit = await stack.call("GET", "/orders", "/orders")  # every write is in the audit trail
    assert status == 200 and sorted(o["kind"] for o in audit["orders"]) == ["sip_cancel", "sip_modify", "sip_place"]

    # Kite refuses to change a cancelled SIP: the job is dead-lettered, not retried
    job = await finished(stack, await write(stack, "PUT", path, "/mf/sips/{sip_id}", {"status": "ACTIVE"}))
    assert job["status"] == "dead_letter" and "CANCELLED" in job["error"], job


async def test_a_purchase_whose_answer_is_lost_is_adopted_not_placed_twice(live: Stack) -> None:
    stack = live
    await sim_admin(stack, "POST", "/_sim/faults", {"route": "POST /mf/orders", "kind": "accept_drop", "times": 1})
    body = {"tradingsymbol": FUND, "transaction_type": "BUY", "amount": 700}
    result = await completed(stack, await write(stack, "POST", "/mf/orders", "/mf/orders", body))
    assert result["adopted"] and result["attempts"] == 2, result  # the retry found it by its tag
    assert [o.order_id for o in stack.sim.state.mf.orders.values()] == [result["order_id"]]


async def test_an_open_order_is_cancelled(live: Stack) -> None:
    stack = live
    body = {"tradingsymbol": STEPPED, "transaction_type": "BUY", "amount": 5100}
    order_id = (await completed(stack, await write(stack, "POST", "/mf/orders", "/mf/orders", body)))["order_id"]
    result = await completed(stack, await write(stack, "DELETE", f"/mf/orders/{order_id}", "/mf/orders/{order_id}"))
    assert result["kind"] == "mf_cancel" and result["order_id"] == order_id
    assert stack.sim.state.mf.orders[order_id].status == "CANCELLED"


async def test_bad_amounts_are_422s_naming_the_field_and_never_reach_kite(live: Stack) -> None:
    stack = live
    await fresh(stack, "/mf/instruments")  # the funds' rules are known from here on
    cases = [
        ({"tradingsymbol": FUND, "transaction_type": "BUY", "amount": 499}, "amount"),  # below the minimum
        ({"tradingsymbol": STEPPED, "transaction_type": "BUY", "amount": 5050}, "amount"),  # not a multiple of 100
        ({"tradingsymbol": "INF000S01054", "transaction_type": "BUY", "amount": 9000}, "tradingsymbol"),  # closed
        ({"tradingsymbol": "INF999X99999", "transaction_type": "BUY", "amount": 9000}, "tradingsymbol"),  # unknown
        ({"tradingsymbol": FUND, "transaction_type": "BUY", "quantity": 10}, "body"),  # a purchase is by amount
        ({"tradingsymbol": FUND, "transaction_type": "BUY", "amount": -5}, "amount"),
    ]
    for body, field in cases:
        status, err = await stack.call("POST", "/mf/orders", "/mf/orders", json=body)
        assert status == 422, (body, err)
        assert field in [d["field"] for d in err["error"]["details"]], (field, err)
    sips = [
        ({"tradingsymbol": FUND, "amount": 50, "instalments": 12, "frequency": "weekly"}, "amount"),
        ({"tradingsymbol": FUND, "amount": 1000, "instalments": 12, "frequency": "monthly"}, "body"),
        ({"tradingsymbol": FUND, "amount": 1000, "instalments": 12, "frequency": "monthly", "instalment_day": 29},
         "instalment_day"),
        ({"tradingsymbol": FUND, "amount": 1000, "instalments": 12, "frequency": "daily"}, "frequency"),
        ({"tradingsymbol": FUND, "amount": 1000, "instalments": 12, "frequency": "weekly", "initial_amount": 10},
         "initial_amount"),
    ]
    for body, field in sips:
        status, err = await stack.call("POST", "/mf/sips", "/mf/sips", json=body)
        assert status == 422, (body, err)
        assert field in [d["field"] for d in err["error"]["details"]], (field, err)
    status, err = await stack.call("PUT", "/mf/sips/123", "/mf/sips/{sip_id}", json={})
    assert status == 422
    counted = stack.sim.state.counters.snapshot()["requests"]
    assert not [r for r in counted if r.startswith(("POST /mf", "PUT /mf", "DELETE /mf"))], counted
    assert stack.sim.state.mf.orders == {} and stack.sim.state.mf.sips == {}
    status, audit = await stack.call("GET", "/orders", "/orders")
    assert audit["orders"] == []  # refused before the audit: nothing was accepted
