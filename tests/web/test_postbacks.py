"""`POST /kite/postback` in the web app (real Redis and Postgres): only an update whose checksum
verifies with a stored api_secret reaches the orders channel; the rest are refused and counted.

These tests get a database of their own: they store accounts, and other web tests assert on the
whole accounts table.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from tests.conftest import SESSION_ID
from tests.web.conftest import API_KEY, fresh_database
from ticker.core.postbacks import postback_checksum
from ticker.core.tick_envelope import unwrap
from ticker.infra.stores.accounts import KiteAccount, account_store
from ticker.infra.stores.db import create_pool

SECRET = "pb-secret-of-the-keyed-app"


def update(order_id: str, secret: str | None = SECRET, **change: object) -> dict:
    doc = {"order_id": order_id, "order_timestamp": "2026-11-20 10:15:02", "status": "COMPLETE",
           "user_id": "AB1234", "app_id": 12345}
    if secret is not None:
        doc["checksum"] = postback_checksum(order_id, doc["order_timestamp"], secret)
    return {**doc, **change}


@pytest.fixture(scope="module")
def postback_db(_server_urls):
    with fresh_database(_server_urls[1], f"ticker_pb_{SESSION_ID}") as url:
        yield url


@pytest_asyncio.fixture
async def app(make_api, settings, postback_db):
    pool = await create_pool(postback_db, min_size=1, max_size=2)
    try:
        store = account_store(pool, settings)
        await store.upsert(KiteAccount(account_id="keyed", api_key="pbkeyed", api_secret=SECRET,
                                       access_token="t" * 32))
        await store.upsert(KiteAccount(account_id="bare", api_key="pbbare", access_token="u" * 32))
    finally:
        await pool.close()
    return await make_api(database_url=postback_db, api_key=API_KEY)


@pytest_asyncio.fixture
async def orders_channel(redis: Redis, names) -> AsyncIterator[asyncio.Queue]:
    """Every order update published on the orders channel, as parsed JSON."""
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(names.orders)
    seen: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        async for message in pubsub.listen():
            for update in unwrap(orjson.loads(message["data"]))[0]:  # an envelope's updates
                await seen.put(update)

    task = asyncio.create_task(pump())
    yield seen
    task.cancel()
    await pubsub.aclose()


async def next_order(seen: asyncio.Queue) -> dict:
    async with asyncio.timeout(30):
        return await seen.get()


async def metric(app, name: str, labels: str) -> float:
    text = await (await app.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_forged_postback_is_refused_and_counted_and_a_genuine_one_is_published(
        app, orders_channel: asyncio.Queue) -> None:
    forged = update("F1", secret="not-our-secret")
    response = await app.post("/kite/postback?account_id=keyed", json=forged)  # no API key: Kite has none
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "bad_checksum"
    response = await app.post("/kite/postback", json=update("F2", secret=None))
    assert response.status == 403 and (await response.json())["error"]["code"] == "missing_checksum"
    response = await app.post("/kite/postback", json={**update("F3"), "checksum": "\u00f8#\U0001f600"})
    assert response.status == 403 and (await response.json())["error"]["code"] == "bad_checksum"

    genuine = update("G1")
    response = await app.post("/kite/postback", json=genuine)  # the account is found by its checksum
    assert response.status == 200, await response.text()
    assert await response.json() == {"published": True, "verified": True, "account_id": "keyed"}
    first = await next_order(orders_channel)  # channel order is publish order: nothing came before it
    assert first == {**genuine, "account_id": "keyed"}
    assert await metric(app, "ticker_http_postbacks_rejected_total", 'reason="bad_checksum"') == 2
    assert await metric(app, "ticker_http_postbacks_rejected_total", 'reason="missing_checksum"') == 1
    assert await metric(app, "ticker_http_postbacks_published_total", 'verified="true"') == 1


async def test_an_account_without_a_secret_passes_unverified_and_health_says_so(
        app, orders_channel: asyncio.Queue) -> None:
    health = await (await app.get("/health")).json()
    assert health["kite"]["postbacks"]["unverified_accounts"] == []
    assert health["kite"]["egress"] == {"order_path": "direct", "other_rest": "direct"}
    unverified = update("U1", secret="whatever")
    response = await app.post("/kite/postback?account_id=bare", json=unverified)
    assert response.status == 200
    assert (await response.json())["verified"] is False
    assert await next_order(orders_channel) == {**unverified, "account_id": "bare"}
    health = await (await app.get("/health")).json()
    assert health["kite"]["postbacks"]["unverified_accounts"] == ["bare"]
    # naming no account, the keyed one's secret must verify it: a forgery cannot ride on the bare one
    assert (await app.post("/kite/postback", json=update("U2", secret="whatever"))).status == 403


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"not json", 400, "malformed"),
    (b"[1, 2]", 400, "malformed"),
    (orjson.dumps({"status": "COMPLETE"}), 400, "malformed"),
    (orjson.dumps({**update("M1"), "order_id": 42}), 400, "malformed"),
    (orjson.dumps({**update("M2"), "checksum": ["x"]}), 400, "malformed"),
    (b'{"order_id": "' + b"x" * 70_000 + b'"}', 413, "payload_too_large"),
])
async def test_bad_bodies_are_refused_with_the_envelope(app, body: bytes, status: int, code: str) -> None:
    response = await app.post("/kite/postback", data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    assert (await response.json())["error"]["code"] == code


async def test_an_unknown_or_malformed_account_is_refused(app) -> None:
    response = await app.post(f"/kite/postback?account_id=nobody-{uuid.uuid4().hex[:6]}", json=update("N1"))
    assert response.status == 404
    response = await app.post("/kite/postback?account_id=bad%20id", json=update("N2"))
    assert response.status == 422 and (await response.json())["error"]["details"][0]["field"] == "account_id"
