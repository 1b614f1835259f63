"""The account surface end to end: real `ticker web` and `ticker worker` (with a trading and an admin
key), Kite played by the stand-in, driven behind our back with the real kiteconnect SDK.

The profile and the day's trades are snapshots the portfolio refresh stores; one order's trades come
from its account's trades snapshot; `POST /admin/order-sync` runs the scheduler's order sync now."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest_asyncio
from kiteconnect import KiteConnect

from tests.web.conftest import ADMIN_KEY, API_KEY, fresh_database
from tests.web.test_e2e import Stack, order_body, running_stack
from tests.web.test_gtt_e2e import WAIT, completed, on_tick, priced
from tests.web.test_portfolio_e2e import at
from ticker.infra.kitesim.sessions import profile_payload

SYNC = "/admin/order-sync"
ORDER_TRADES = "/orders/{order_id}/trades"


@pytest_asyncio.fixture
async def live(_server_urls, redis_url, kitesim, spec_checker) -> AsyncIterator[tuple[Stack, Stack]]:
    """(the stack called with the admin key, the same stack called with no key)."""
    with fresh_database(_server_urls[1], f"ticker_acct_{uuid.uuid4().hex[:8]}") as database:
        async with running_stack(database, redis_url, kitesim, spec_checker,
                                 API_KEY=API_KEY, ADMIN_API_KEY=ADMIN_KEY) as plain:
            async with aiohttp.ClientSession(headers={"X-API-Key": ADMIN_KEY}) as keyed:
                yield replace(plain, http=keyed), plain


async def read(stack: Stack, path: str, template: str) -> dict:
    """The snapshot at `path`; each 202 names a refresh job, waited for before reading again."""
    async with asyncio.timeout(WAIT):
        while True:
            status, body = await stack.call("GET", path, template)
            if status == 200:
                return body
            assert status == 202, body
            await completed(stack, body)


async def refreshed(stack: Stack, path: str) -> dict:
    """`?refresh=true`, its job waited for, then the snapshot it stored."""
    status, accepted = await stack.call("GET", f"{path}?refresh=true", path)
    assert status == 202 and accepted["status_url"] == f"/jobs/{accepted['job_id']}", accepted
    await completed(stack, accepted)
    return await read(stack, path, path)


async def place(stack: Stack, **change: object) -> tuple[str, str]:
    """(Kite's order id, the placing job's id) of an order placed over our API."""
    status, accepted = await stack.call("POST", "/orders", "/orders", json=order_body(stack, **change))
    assert status == 202, accepted
    return (await completed(stack, accepted))["kite_order_id"], accepted["job_id"]


def kite_of(stack: Stack) -> KiteConnect:
    """The real SDK on the stand-in, as the account's owner at Kite (not through us)."""
    account = stack.sim.account
    return KiteConnect(account.api_key, account.access_token, root=stack.sim.url)


def sim_order(stack: Stack, order_id: str) -> dict:
    [order] = [o for o in stack.sim.state.orders.orders_of(stack.sim.account.api_key) if o["order_id"] == order_id]
    return order


async def kite_view(stack: Stack, order_id: str) -> dict:
    status, view = await stack.call("GET", f"/orders/{order_id}", "/orders/{order_id}")
    assert status == 200, view
    return view["kite"]


async def test_profile_is_the_stand_ins_user(live: tuple[Stack, Stack]) -> None:
    stack, _ = live
    status, first = await stack.call("GET", "/account/profile", "/account/profile")
    assert status == 202 and first["account_id"] == "primary"  # no snapshot yet: the refresh is queued
    profile = await read(stack, "/account/profile", "/account/profile")
    assert profile["kind"] == "profile" and profile["account_id"] == "primary" and profile["age_seconds"] >= 0
    assert profile["data"] == profile_payload(stack.sim.account)  # Kite's document, as the stand-in sent it
    assert profile["data"]["user_id"] == stack.sim.account.user_id and "NFO" in profile["data"]["exchanges"]

    again = await refreshed(stack, "/account/profile")
    assert at(again) > at(profile) and again["data"] == profile["data"]
    status, named = await stack.call("GET", "/account/profile?account_id=primary", "/account/profile")
    assert status == 200 and named["data"]["user_id"] == stack.sim.account.user_id
    status, err = await stack.call("GET", "/account/profile?account_id=nobody", "/account/profile")
    assert status == 422 and err["error"]["details"][0]["field"] == "account_id"


async def test_trades_are_the_stand_ins_fills_for_the_day_and_for_one_order(live: tuple[Stack, Stack]) -> None:
    stack, _ = live
    before = await refreshed(stack, "/trades")  # taken before the order exists
    order_id, job_id = await place(stack)
    fills = stack.sim.state.orders.trades_of(stack.sim.account.api_key, order_id)
    lot, filled = stack.option["lot_size"], sim_order(stack, order_id)
    assert [f["quantity"] for f in fills] == [lot] and filled["status"] == "COMPLETE"

    # Nothing has told us of the fill yet (no postbacks here): as of that snapshot, the order has no trades.
    status, one = await stack.call("GET", f"/orders/{order_id}/trades", ORDER_TRADES)
    assert status == 200 and one["data"] == [] and one["as_of"] == before["as_of"], one
    # Once the audit knows the fill, a snapshot without it is never served: refreshed first (202) or new.
    status, accepted = await stack.call("POST", SYNC, SYNC, json={"account_id": "primary"})
    assert (await completed(stack, accepted))["updated"] == 1
    assert (await kite_view(stack, order_id))["filled_quantity"] == lot
    status, one = await stack.call("GET", f"/orders/{order_id}/trades", ORDER_TRADES)
    assert status == 202 or (status == 200 and one["data"] == fills), one

    # one order's trades, by Kite's order id and by the id of the job that placed it
    for name in (order_id, job_id):
        one = await read(stack, f"/orders/{name}/trades", ORDER_TRADES)
        assert one["order_id"] == order_id and one["account_id"] == "primary" and one["kind"] == "trades"
        assert one["data"] == fills and at(one) > at(before) and one["age_seconds"] >= 0
    status, accepted = await stack.call("GET", f"/orders/{order_id}/trades?refresh=true", ORDER_TRADES)
    assert status == 202 and accepted["account_id"] == "primary"

    day = await refreshed(stack, "/trades")
    assert day["kind"] == "trades" and day["account_id"] == "primary"
    mine = [t for t in day["data"] if t["order_id"] == order_id]
    assert mine == fills  # trade_id, exchange_order_id, fill_timestamp ... as Kite sent them
    assert mine[0]["quantity"] == lot and mine[0]["average_price"] == filled["average_price"]
    assert mine[0]["exchange_order_id"] == filled["exchange_order_id"]

    status, missing = await stack.call("GET", "/orders/nosuchorder/trades", ORDER_TRADES)
    assert status == 404 and missing["error"]["code"] == "not_found" and "nosuchorder" in missing["error"]["message"]
    status, err = await stack.call("GET", f"/orders/{order_id}/trades?account_id=primary", ORDER_TRADES)
    assert status == 422  # the order names its account


async def test_order_sync_on_demand_brings_in_what_kite_did_behind_our_back(live: tuple[Stack, Stack]) -> None:
    stack, plain = live
    last = await priced(stack, 100.0)
    low = on_tick(last / 4)  # a buy far below the market rests
    cancelled, _ = await place(stack, order_type="LIMIT", price=low)
    filled, _ = await place(stack, order_type="LIMIT", price=low)
    assert sim_order(stack, cancelled)["status"] == sim_order(stack, filled)["status"] == "OPEN"
    assert (await kite_view(stack, cancelled))["status"] in (None, "OPEN")

    # at Kite, not through us: one order cancelled, the other raised above the market and filled
    kite = kite_of(stack)
    await asyncio.to_thread(kite.cancel_order, "regular", cancelled)
    await asyncio.to_thread(kite.modify_order, "regular", filled, price=on_tick(last * 4))
    assert sim_order(stack, cancelled)["status"] == "CANCELLED"
    done = sim_order(stack, filled)
    assert done["status"] == "COMPLETE"
    assert (await kite_view(stack, cancelled))["status"] in (None, "OPEN")  # nothing told us yet

    # one account named ...
    status, accepted = await stack.call("POST", SYNC, SYNC, json={"account_id": "primary"})
    assert status == 202 and accepted["status_url"] == f"/jobs/{accepted['job_id']}", accepted
    result = await completed(stack, accepted)
    assert result["accounts"] == 1 and result["updated"] == 2 and result["errors"] == {}, result
    view = await kite_view(stack, cancelled)
    assert view["status"] == "CANCELLED" and view["updated_at"]
    view = await kite_view(stack, filled)
    assert view["status"] == "COMPLETE" and view["filled_quantity"] == stack.option["lot_size"]
    assert view["average_price"] == done["average_price"]

    # ... or every account with open orders (none left: nothing to read from Kite)
    status, accepted = await stack.call("POST", SYNC, SYNC)
    assert status == 202
    assert await completed(stack, accepted) == {"accounts": 0, "updated": 0, "errors": {}}

    # the admin key only; an unknown account is refused before anything is queued
    status, err = await plain.call("POST", SYNC, SYNC, headers={"X-API-Key": API_KEY})
    assert status == 403 and err["error"]["code"] == "forbidden"
    status, err = await plain.call("POST", SYNC, SYNC)
    assert status == 401 and err["error"]["code"] == "unauthorized"
    status, err = await stack.call("POST", SYNC, SYNC, json={"account_id": "nobody"})
    assert status == 422 and err["error"]["details"][0]["field"] == "account_id"


async def test_the_reads_take_the_trading_key(live: tuple[Stack, Stack]) -> None:
    _, plain = live
    trading = {"X-API-Key": API_KEY}
    for path, template in (("/account/profile", "/account/profile"), ("/trades", "/trades"),
                           ("/orders/nosuchorder/trades", ORDER_TRADES)):
        status, _ = await plain.call("GET", path, template, headers=trading)
        assert status in (202, 404), path
        status, err = await plain.call("GET", path, template)
        assert status == 401 and err["error"]["code"] == "unauthorized", path
