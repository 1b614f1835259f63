"""HTTP postbacks as Kite's Postback API sends them: a raw JSON body per COMPLETE, CANCELLED, REJECTED
and UPDATE, carrying the app's id and checksum = sha256(order_id + order_timestamp + api_secret)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator

import numpy as np
import orjson
from aiohttp import web
from kiteconnect import KiteConnect

from ticker.infra.kitesim.universe import KIND_CE


@contextlib.asynccontextmanager
async def receiver(status: int = 200) -> AsyncIterator[tuple[str, list[dict]]]:
    """A postback endpoint on a free port: (its URL, the bodies it received)."""
    got: list[dict] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(orjson.loads(await request.read()))  # Kite posts a raw JSON body
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/postback", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/postback", got
    finally:
        await runner.cleanup()


async def _until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_postbacks_carry_app_id_checksum_and_the_documented_statuses(kitesim_factory):
    async with receiver() as (url, got):
        sim = await kitesim_factory(postback_url=url)
        acc = sim.account
        kite = KiteConnect(acc.api_key, acc.access_token, root=sim.url)
        uni = sim.state.universe
        row = int(np.flatnonzero(uni.kind == KIND_CE)[0])
        base = {"variety": "regular", "exchange": "NFO", "tradingsymbol": str(uni.symbol[row]),
                "transaction_type": "BUY", "quantity": int(uni.lot[row]), "product": "NRML"}
        filled = await asyncio.to_thread(kite.place_order, **base, order_type="MARKET", market_protection=-1)
        resting = await asyncio.to_thread(kite.place_order, **base, order_type="LIMIT", price=0.05)
        await asyncio.to_thread(kite.modify_order, "regular", resting, price=0.1)
        await asyncio.to_thread(kite.cancel_order, "regular", resting)
        rejected = await asyncio.to_thread(kite.place_order, **{**base, "product": "CNC"}, order_type="LIMIT",
                                           price=0.05)
        await _until(lambda: len(got) >= 4)
        seen = [(p["order_id"], p["status"]) for p in got]
        assert seen == [(filled, "COMPLETE"), (resting, "UPDATE"), (resting, "CANCELLED"), (rejected, "REJECTED")]
        for p in got:  # OPEN and TRIGGER PENDING are not postback statuses
            expected = hashlib.sha256(f"{p['order_id']}{p['order_timestamp']}{acc.api_secret}".encode()).hexdigest()
            assert p["app_id"] == acc.app_id and p["checksum"] == expected
            assert p["user_id"] == acc.user_id and "unfilled_quantity" in p
        # counted once the receiver has answered, which may be just after it saw the postback
        await _until(lambda: sim.state.postbacks.describe()["sent"] == 4)


async def test_a_failing_receiver_is_counted_and_never_blocks_orders(kitesim_factory):
    async with receiver(status=500) as (url, got):
        sim = await kitesim_factory(postback_url=url)
        acc = sim.account
        kite = KiteConnect(acc.api_key, acc.access_token, root=sim.url)
        uni = sim.state.universe
        row = int(np.flatnonzero(uni.kind == KIND_CE)[0])
        order_id = await asyncio.to_thread(
            kite.place_order, variety="regular", exchange="NFO", tradingsymbol=str(uni.symbol[row]),
            transaction_type="BUY", quantity=int(uni.lot[row]), product="NRML", order_type="MARKET",
            market_protection=-1)
        await _until(lambda: sim.state.postbacks.describe()["failed"] >= 1)
        assert got[0]["order_id"] == order_id
        assert (await asyncio.to_thread(kite.order_history, order_id))[-1]["status"] == "COMPLETE"
