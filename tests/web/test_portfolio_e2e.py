"""Portfolio snapshots and one-order reads end to end: real `ticker web` and `ticker worker`, Kite
played by the stand-in. An order placed over HTTP shows in the positions the worker refreshes after
Kite reports its fill, and `GET /orders/{order_id}` shows the fill and its average price."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest_asyncio

from tests.web.conftest import fresh_database
from tests.web.test_e2e import Stack, order_body, running_stack
from tests.web.test_gtt_e2e import WAIT, completed, sim_admin

POSITIONS = "/portfolio/positions"


@pytest_asyncio.fixture
async def live(_server_urls, redis_url, kitesim, spec_checker) -> AsyncIterator[Stack]:
    with fresh_database(_server_urls[1], f"ticker_pf_{uuid.uuid4().hex[:8]}") as database:
        async with running_stack(database, redis_url, kitesim, spec_checker) as running:
            yield running


def net_quantity(snapshot: dict, tradingsymbol: str) -> int:
    return sum(p["quantity"] for p in snapshot["data"]["net"] if p["tradingsymbol"] == tradingsymbol)


def at(snapshot: dict) -> datetime:
    return datetime.fromisoformat(snapshot["as_of"])


async def snapshot(stack: Stack, path: str = POSITIONS, query: str = "") -> dict:
    """The snapshot, refreshing first when there is none yet (the 202 names the refresh job)."""
    status, body = await stack.call("GET", path + query, path)
    if status == 202:
        await completed(stack, body)
        status, body = await stack.call("GET", path + query, path)
    assert status == 200, body
    return body


async def until(stack: Stack, path: str, template: str, done: Callable[[dict], bool]) -> dict:
    async with asyncio.timeout(WAIT):
        while True:
            status, body = await stack.call("GET", path, template)
            if status == 200 and done(body):
                return body
            await asyncio.sleep(0.1)


async def test_a_filled_order_shows_in_positions_and_in_its_order_view(live: Stack) -> None:
    symbol, lot = live.option["tradingsymbol"], live.option["lot_size"]
    status, first = await live.call("GET", POSITIONS, POSITIONS)
    assert status == 202 and first["account_id"] == "primary" and first["status_url"]  # no snapshot yet
    before = await snapshot(live)
    assert before["account_id"] == "primary" and before["kind"] == "positions" and before["as_of"]
    held = net_quantity(before, symbol)

    await sim_admin(live, "POST", "/_sim/postbacks/url", {"url": f"{live.url}/kite/postback"})
    status, accepted = await live.call("POST", "/orders", "/orders", json=order_body(live))
    assert status == 202
    result = await completed(live, accepted)
    order_id = result["kite_order_id"]

    # Kite's COMPLETE postback reaches the audit: the order view shows the fill and its price ...
    path = f"/orders/{order_id}"
    view = await until(live, path, "/orders/{order_id}", lambda v: v["kite"]["status"] == "COMPLETE")
    assert view["order_id"] == order_id and view["account_id"] == "primary"
    assert view["kite"]["filled_quantity"] == lot and view["kite"]["average_price"] > 0
    assert [j["kind"] for j in view["jobs"]] == ["place"] and view["jobs"][0]["job_id"] == accepted["job_id"]
    assert view["jobs"][0]["attempt_log"][0]["outcome"] == "ok"
    status, by_job = await live.call("GET", f"/orders/{accepted['job_id']}", "/orders/{order_id}")
    assert status == 200 and by_job["order_id"] == order_id
    # ... the job's result carries Kite's status ...
    status, job = await live.call("GET", accepted["status_url"], "/jobs/{job_id}")
    assert status == 200 and job["result"]["kite_status"] == "COMPLETE", job
    # ... and the fill made the worker refresh the account's positions by itself.
    after = await until(live, POSITIONS, POSITIONS, lambda s: net_quantity(s, symbol) == held + lot)
    assert at(after) > at(before) and after["age_seconds"] >= 0

    status, missing = await live.call("GET", "/orders/nosuchorder", "/orders/{order_id}")
    assert status == 404 and "nosuchorder" in missing["error"]["message"]


async def test_refresh_on_request_and_the_account_rules(live: Stack) -> None:
    for path in (POSITIONS, "/portfolio/holdings", "/portfolio/margins"):
        status, accepted = await live.call("GET", f"{path}?refresh=true", path)
        assert status == 202 and accepted["status_url"] == f"/jobs/{accepted['job_id']}", accepted
        refreshed = await completed(live, accepted)
        status, body = await live.call("GET", path, path)
        assert status == 200, (path, refreshed, body)
        assert body["kind"] == path.rsplit("/", 1)[1] and body["account_id"] == "primary"
    margins = await snapshot(live, "/portfolio/margins")
    assert "equity" in margins["data"]

    # two accounts: naming one is required, and the refusal lists them
    account = live.sim.account
    for account_id in ("primary", "second"):
        status, _ = await live.call("POST", "/accounts", "/accounts", json={
            "account_id": account_id, "api_key": account.api_key, "api_secret": account.api_secret,
            "access_token": account.access_token})
        assert status in (200, 201)
    status, err = await live.call("GET", POSITIONS, POSITIONS)
    assert status == 422 and err["error"]["details"][0]["field"] == "account_id"
    assert "primary" in err["error"]["message"] and "second" in err["error"]["message"]
    status, err = await live.call("GET", f"{POSITIONS}?account_id=nobody", POSITIONS)
    assert status == 422 and "nobody" in err["error"]["message"]
    status, body = await live.call("GET", f"{POSITIONS}?account_id=primary", POSITIONS)
    assert status == 200 and body["account_id"] == "primary"
    second = await snapshot(live, POSITIONS, "?account_id=second")
    assert second["account_id"] == "second"
