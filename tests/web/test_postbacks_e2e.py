"""Kite's order postbacks end to end, both ways they arrive: the stand-in posting to our
`POST /kite/postback` (real `ticker web`), and the stand-in's ticker WebSocket (real `ticker
streamer`). Only updates whose checksum verifies reach `ticker:<prefix>:orders`; forged ones are
counted by reason and never published."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest_asyncio

from tests.web.conftest import fresh_database
from tests.web.test_e2e import Stack, order_body, running_stack
from tests.web.test_gtt_e2e import WAIT, completed, sim_admin
from ticker.core.tick_envelope import unwrap
from ticker.infra.queue.enqueue import names_for
from ticker.infra.stores.redis import connect

FORGED = "0" * 64  # a well-formed checksum that is not the real one


@pytest_asyncio.fixture
async def database(_server_urls) -> AsyncIterator[str]:
    with fresh_database(_server_urls[1], f"ticker_pbe_{uuid.uuid4().hex[:8]}") as url:
        yield url


@contextlib.asynccontextmanager
async def orders_channel(stack: Stack) -> AsyncIterator[Callable[[Callable[[dict], bool]], Awaitable[list]]]:
    """`await seen_until(predicate)`: every update published on the orders channel up to and
    including the first that satisfies `predicate`."""
    redis = connect(stack.settings.redis_url)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(names_for(stack.settings).orders)
    seen: list[dict] = []

    async def seen_until(predicate: Callable[[dict], bool]) -> list[dict]:
        async with asyncio.timeout(WAIT):
            while not any(predicate(doc) for doc in seen):
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    seen.extend(unwrap(orjson.loads(message["data"]))[0])  # an envelope or a bare update
        return list(seen)

    try:
        yield seen_until
    finally:
        await pubsub.aclose()
        await redis.aclose()


async def metric(stack: Stack, url: str, name: str, labels: str) -> float:
    async with stack.http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def postback(order_id: str, status: str = "COMPLETE") -> dict:
    return {"order_id": order_id, "order_timestamp": "2026-11-20 10:15:02", "status": status,
            "exchange": "NFO", "tradingsymbol": "NIFTY26NOV24450CE", "filled_quantity": 65}


async def test_http_postbacks_from_the_stand_in_reach_the_channel_only_when_genuine(
        database, redis_url, kitesim, spec_checker) -> None:
    async with running_stack(database, redis_url, kitesim, spec_checker) as stack, \
            orders_channel(stack) as seen_until:
        await sim_admin(stack, "POST", "/_sim/postbacks/url", {"url": f"{stack.url}/kite/postback"})

        # a real order: Kite (the stand-in) posts its COMPLETE update to us, signed
        status, accepted = await stack.call("POST", "/orders", "/orders", json=order_body(stack))
        assert status == 202
        order_id = (await completed(stack, accepted))["kite_order_id"]
        seen = await seen_until(lambda d: d.get("order_id") == order_id)
        assert seen[-1]["account_id"] == "primary" and seen[-1]["status"] == "COMPLETE"
        assert seen[-1]["checksum"] and seen[-1]["app_id"] == stack.sim.account.app_id

        # a forged update through the same door, then a genuine marker: the marker arrives, the forgery never
        forged, marker = f"forged-{uuid.uuid4().hex[:8]}", f"marker-{uuid.uuid4().hex[:8]}"
        await sim_admin(stack, "POST", "/_sim/postbacks/send",
                        {"update": postback(forged), "checksum": FORGED, "ws": False})
        await sim_admin(stack, "POST", "/_sim/postbacks/send", {"update": postback(marker), "ws": False})
        seen = await seen_until(lambda d: d.get("order_id") == marker)
        assert forged not in {d.get("order_id") for d in seen}
        assert await metric(stack, stack.url, "ticker_http_postbacks_rejected_total", 'reason="bad_checksum"') == 1
        assert stack.sim.state.postbacks.failed == 1  # our 403, as the stand-in saw it


async def test_websocket_postbacks_reach_the_channel_only_when_genuine(
        database, redis_url, kitesim, spec_checker) -> None:
    async with running_stack(database, redis_url, kitesim, spec_checker, streamer=True) as stack, \
            orders_channel(stack) as seen_until:
        status, _ = await stack.call("POST", "/subscriptions", "/subscriptions",
                                     json={"instrument_token": stack.option["instrument_token"]})
        assert status in (200, 201)
        async with asyncio.timeout(WAIT):  # the streamer holds a ticker connection for the account
            while not stack.sim.state.connections(stack.sim.account.api_key):
                await asyncio.sleep(0.05)

        forged, marker = f"forged-{uuid.uuid4().hex[:8]}", f"marker-{uuid.uuid4().hex[:8]}"
        sent = await sim_admin(stack, "POST", "/_sim/postbacks/send",
                               {"update": postback(forged, "OPEN"), "checksum": FORGED, "http": False})
        assert sent["ws_connections"] >= 1
        await sim_admin(stack, "POST", "/_sim/postbacks/send", {"update": postback(marker, "OPEN"), "http": False})
        seen = await seen_until(lambda d: d.get("order_id") == marker)
        assert forged not in {d.get("order_id") for d in seen}
        assert seen[-1]["account_id"] == "primary"
        assert stack.streamer_url is not None
        assert await metric(stack, stack.streamer_url, "ticker_streamer_postbacks_rejected_total",
                            'reason="bad_checksum"') == 1
        async with stack.http.get(f"{stack.streamer_url}/health") as resp:
            assert (await resp.json())["postbacks"]["unverified_accounts"] == []
