"""Subscriptions (Postgres + control channel), instrument search, quotes from the Redis snapshot."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import orjson

from tests.web.seed import CALL, EQUITY, EXPIRY, NIFTY_INDEX, OPTIONS, RETIRED


@asynccontextmanager
async def control_listener(redis, names):
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(names.control)
    try:
        yield pubsub
    finally:
        await pubsub.aclose()


async def next_control(pubsub) -> dict:
    async with asyncio.timeout(30):
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                return orjson.loads(message["data"])


async def test_subscribe_update_list_and_unsubscribe(api, redis, names, db) -> None:
    token = OPTIONS[3].instrument_token
    async with control_listener(redis, names) as control:
        created = await api.post("/subscriptions", json={"instrument_token": token, "requested_mode": "QUOTE"})
        assert created.status == 201
        doc = await created.json()
        assert (doc["instrument_token"], doc["requested_mode"], doc["status"]) == (token, "QUOTE", "active")
        announced = await next_control(control)
        assert announced["kind"] == "subscriptions" and announced["tokens"] == [token]

        updated = await api.post("/subscriptions", json={"instrument_token": token, "account_id": "primary"})
        assert updated.status == 200 and (await updated.json())["requested_mode"] == "FULL"
        await next_control(control)

        listed = await (await api.get("/subscriptions?status=active")).json()
        assert token in [s["instrument_token"] for s in listed["subscriptions"]] and listed["offset"] == 0

        removed = await api.delete(f"/subscriptions/{token}")
        assert removed.status == 200 and (await removed.json())["status"] == "inactive"
        assert (await next_control(control))["tokens"] == [token]
    row = await db.fetchrow("SELECT status, deactivated_reason FROM subscriptions WHERE instrument_token = $1", token)
    assert row["status"] == "inactive" and row["deactivated_reason"] == "unsubscribed via API"
    inactive = await (await api.get("/subscriptions?status=inactive")).json()
    assert token in [s["instrument_token"] for s in inactive["subscriptions"]]
    assert (await api.get(f"/subscriptions/{token}")).status == 200


async def _walk(api, path: str, key: str) -> list:
    """Every item of a list, page by page as a client follows `next_offset`."""
    items, offset = [], 0
    while offset is not None:
        page = await (await api.get(f"{path}&limit=2&offset={offset}")).json()
        assert set(page) == {key, "limit", "offset", "next_offset"} and page["limit"] == 2, page
        assert len(page[key]) == 2 or page["next_offset"] is None
        items += page[key]
        offset = page["next_offset"]
    return items


async def test_every_list_pages_in_one_shape(api, admin_api) -> None:
    for token in (o.instrument_token for o in OPTIONS[:5]):
        assert (await api.post("/subscriptions", json={"instrument_token": token})).status in (200, 201)
    whole = await (await api.get("/subscriptions?status=active&limit=1000")).json()
    assert whole["next_offset"] is None
    walked = await _walk(api, "/subscriptions?status=active", "subscriptions")
    assert [s["instrument_token"] for s in walked] == [s["instrument_token"] for s in whole["subscriptions"]]
    assert len(walked) >= 5

    listed = await (await api.get("/instruments?name=NIFTY&limit=1000")).json()
    walked = await _walk(api, "/instruments?name=NIFTY", "instruments")
    assert [i["tradingsymbol"] for i in walked] == [i["tradingsymbol"] for i in listed["instruments"]]
    assert len(walked) >= 3
    for path, key in (("/orders?limit=2", "orders"), ("/dlq?limit=2", "dead_letters")):
        client = admin_api if key == "dead_letters" else api
        page = await (await client.get(path)).json()
        assert set(page) == {key, "limit", "offset", "next_offset"}, page


async def test_subscription_errors_name_the_field(api) -> None:
    for body, field, status in (
        ({"instrument_token": 12345}, "instrument_token", 422),
        ({"instrument_token": RETIRED.instrument_token}, "instrument_token", 422),
        ({"instrument_token": CALL.instrument_token, "requested_mode": "full"}, "requested_mode", 422),
        ({"instrument_token": -1}, "instrument_token", 422),
        ({"instrument_token": CALL.instrument_token, "account_id": "ghost"}, "account_id", 422),
    ):
        resp = await api.post("/subscriptions", json=body)
        assert resp.status == status, (body, await resp.text())
        assert (await resp.json())["error"]["details"][0]["field"] == field
    assert (await api.delete("/subscriptions/4242")).status == 404
    assert (await api.delete("/subscriptions/not-a-token")).status == 422
    assert (await api.get("/subscriptions/99999999999")).status == 422


async def test_instrument_search_and_lookup(api) -> None:
    found = await (await api.get("/instruments?q=nifty&instrument_type=CE&limit=100")).json()
    symbols = {i["tradingsymbol"] for i in found["instruments"]}
    assert symbols == {o.tradingsymbol for o in OPTIONS if o.instrument_type == "CE"}
    assert RETIRED.tradingsymbol not in symbols
    with_retired = await (await api.get(f"/instruments?q={RETIRED.tradingsymbol}&include_inactive=true")).json()
    assert [i["is_active"] for i in with_retired["instruments"]] == [False]
    by_strike = await (await api.get(f"/instruments?name=NIFTY&expiry={EXPIRY}&strike={CALL.strike}")).json()
    assert {i["instrument_type"] for i in by_strike["instruments"]} == {"CE", "PE"}
    assert (await (await api.get("/instruments?q=INF&exchange=NSE")).json())["instruments"][0]["tradingsymbol"] == "INFY"
    assert (await (await api.get("/instruments?q=%25")).json())["instruments"] == []  # LIKE wildcards are literal
    one = await (await api.get(f"/instruments/{EQUITY.instrument_token}")).json()
    assert one["tradingsymbol"] == "INFY" and one["lot_size"] == 1
    assert (await api.get("/instruments/1")).status == 404
    assert (await api.get("/instruments?expiry=tomorrow")).status == 422


async def test_quotes_come_from_the_latest_snapshot(api, redis, names) -> None:
    tick = {"instrument_token": NIFTY_INDEX, "last_price": 25812.35}
    await redis.hset(names.latest, str(NIFTY_INDEX), orjson.dumps(tick))
    doc = await (await api.get(f"/quotes?tokens={NIFTY_INDEX},{CALL.instrument_token}")).json()
    assert doc["quotes"] == {str(NIFTY_INDEX): tick} and doc["missing"] == [CALL.instrument_token]
    for bad in ("", "abc", "1,,x", ",".join(["1"] * 501), "4294967296"):
        resp = await api.get(f"/quotes?tokens={bad}")
        assert resp.status == 422, bad
        assert (await resp.json())["error"]["details"][0]["field"].startswith("tokens")
    assert (await api.get("/quotes")).status == 422
