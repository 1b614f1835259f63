"""`/ws/ticks`: authentication before the upgrade, the message protocol, fan-out by token, drops."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.web.conftest import ADMIN_KEY, API_KEY
from ticker.http.middleware.observe import HttpMetrics
from ticker.http.state import SERVICES
from ticker.http.ws.hub import TickHub
from ticker.infra.runtime.prometheus import new_registry

JWT_SECRET = "j" * 32
KEYED = {"X-API-Key": API_KEY}


async def receive(ws, kind: str, timeout: float = 30.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive_json()
            if message["type"] == kind:
                return message


async def connect(api, path: str = "/ws/ticks", **kw):
    ws = await api.ws_connect(path, **kw)
    assert (await receive(ws, "connected"))["connection_id"]
    return ws


def ticks(tokens, **extra) -> bytes:
    return orjson.dumps([{"instrument_token": t, "last_price": 100.0 + i, **extra} for i, t in enumerate(tokens)])


async def test_a_client_gets_exactly_the_tokens_it_subscribed(make_api, redis, names) -> None:
    api = await make_api(api_key=API_KEY)
    assert await api.app[SERVICES].hub.wait_ready(30)
    ws = await connect(api, headers=KEYED)
    mine, others = [101, 102, 103, 104, 105], [201, 202, 203, 204, 205]
    await ws.send_json({"action": "subscribe", "tokens": mine})
    subscribed = await receive(ws, "subscribed")
    assert subscribed["tokens"] == mine and subscribed["total"] == 5
    await redis.publish(names.options, ticks(mine[:3] + others[:3]))
    await redis.publish(names.underlying, ticks(others[3:] + mine[3:]))
    await redis.publish(names.options, ticks([mine[0]], last=True))
    got: list[int] = []
    async with asyncio.timeout(30):
        while True:
            message = await ws.receive_json()
            assert message["type"] == "tick", message
            got.append(message["data"]["instrument_token"])
            if message["data"].get("last"):
                break
    assert sorted(got) == sorted([*mine, mine[0]])
    await ws.send_json({"action": "unsubscribe", "tokens": mine[:4]})
    assert (await receive(ws, "unsubscribed"))["total"] == 1
    await redis.publish(names.options, ticks(mine))
    only = await receive(ws, "tick")
    assert only["data"]["instrument_token"] == mine[4]
    await ws.close()


async def test_batch_mode_delivers_ticks_together(make_api, redis, names) -> None:
    api = await make_api()
    assert await api.app[SERVICES].hub.wait_ready(30)
    ws = await api.ws_connect("/ws/ticks?batch=true")
    assert (await receive(ws, "connected"))["batch"] is True
    await ws.send_json({"action": "subscribe", "tokens": [301, 302, 303]})
    await receive(ws, "subscribed")
    await redis.publish(names.options, ticks([301, 302, 399, 303]))
    got: list[int] = []
    async with asyncio.timeout(30):
        while len(got) < 3:
            message = await receive(ws, "ticks")
            got += [t["instrument_token"] for t in message["data"]]
    assert got == [301, 302, 303]
    await ws.close()
    assert await refused(api, "/ws/ticks?batch=maybe") == 422


async def test_late_joiners_get_the_latest_tick_first(make_api, redis, names) -> None:
    api = await make_api()
    await redis.hset(names.latest, "777", orjson.dumps({"instrument_token": 777, "last_price": 9.5}))
    ws = await connect(api)
    await ws.send_json({"action": "subscribe", "tokens": [777, 778]})
    await receive(ws, "subscribed")
    first = await receive(ws, "tick")
    assert first["data"] == {"instrument_token": 777, "last_price": 9.5}
    await ws.close()


async def test_protocol_errors_are_replies_not_disconnects(make_api) -> None:
    api = await make_api()
    ws = await connect(api)
    await ws.send_str("{not json")
    assert "invalid message" in (await receive(ws, "error"))["message"]
    await ws.send_json({"action": "dance"})
    assert (await receive(ws, "error"))["details"][0]["field"] == "action"
    await ws.send_json({"action": "subscribe", "tokens": [1, -4]})
    assert (await receive(ws, "error"))["details"][0]["field"] == "tokens.1"
    await ws.send_bytes(b"\x00\x01")
    assert "text" in (await receive(ws, "error"))["message"]
    await ws.send_json({"action": "ping"})
    assert (await receive(ws, "pong"))["dropped"] == 0
    await ws.close()


async def test_too_many_tokens_per_connection_is_refused(make_api) -> None:
    api = await make_api(ws_max_tokens_per_client=3)
    ws = await connect(api)
    await ws.send_json({"action": "subscribe", "tokens": [1, 2, 3, 4]})
    assert "at most 3 tokens" in (await receive(ws, "error"))["message"]
    await ws.send_json({"action": "subscribe", "tokens": [1, 2, 3]})
    assert (await receive(ws, "subscribed"))["total"] == 3
    await ws.close()


async def refused(api, path: str = "/ws/ticks", **kw) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await api.ws_connect(path, **kw)
    return exc.value.status


async def test_upgrade_is_refused_without_valid_credentials(make_api) -> None:
    api = await make_api(api_key=API_KEY, jwt_secret=JWT_SECRET)
    assert await refused(api) == 401
    assert await refused(api, headers={"X-API-Key": "wrong"}) == 401
    expired = jwt.encode({"sub": "u1", "exp": int(time.time()) - 10}, JWT_SECRET, algorithm="HS256")
    assert await refused(api, f"/ws/ticks?token={expired}") == 401
    forged = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256")
    assert await refused(api, f"/ws/ticks?token={forged}") == 401
    unsigned = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, None, algorithm="none")
    assert await refused(api, f"/ws/ticks?token={unsigned}") == 401
    assert await refused(api, "/ws/ticks?token=garbage") == 401
    good = jwt.encode({"sub": "trader-7", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256")
    ws = await api.ws_connect(f"/ws/ticks?token={good}")
    assert (await receive(ws, "connected"))["user"] == {"sub": "trader-7", "via": "jwt"}
    await ws.close()
    ws = await api.ws_connect("/ws/ticks", headers=KEYED)
    assert (await receive(ws, "connected"))["user"]["via"] == "api_key"
    await ws.close()
    plain = await api.get("/ws/ticks", headers=KEYED)
    assert plain.status == 400 and (await plain.json())["error"]["code"] == "websocket_required"


async def test_rs256_tokens_verify_against_the_jwks_url(make_api) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    fetches = 0

    async def jwks(_request: web.Request) -> web.Response:
        nonlocal fetches
        fetches += 1
        return web.json_response({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})

    jwks_app = web.Application()
    jwks_app.router.add_get("/jwks.json", jwks)
    server = TestServer(jwks_app)
    await server.start_server()
    try:
        api = await make_api(jwt_jwks_url=str(server.make_url("/jwks.json")), jwt_audience="ticker")
        claims = {"sub": "mobile-1", "aud": "ticker", "exp": int(time.time()) + 60}
        good = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        ws = await api.ws_connect(f"/ws/ticks?token={good}")
        assert (await receive(ws, "connected"))["user"]["sub"] == "mobile-1"
        await ws.close()
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert await refused(api, f"/ws/ticks?token={jwt.encode(claims, other, algorithm='RS256', headers={'kid': 'k1'})}") == 401
        wrong_aud = jwt.encode({**claims, "aud": "someone-else"}, key, algorithm="RS256", headers={"kid": "k1"})
        assert await refused(api, f"/ws/ticks?token={wrong_aud}") == 401
        unknown_kid = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k9"})
        for _ in range(3):
            assert await refused(api, f"/ws/ticks?token={unknown_kid}") == 401
        assert fetches == 1  # unknown key ids do not turn into a fetch each
    finally:
        await server.close()


async def test_a_slow_client_drops_and_counts_instead_of_growing(redis, names) -> None:
    metrics = HttpMetrics(new_registry())
    hub = TickHub(redis, names, metrics, queue_max=3, max_clients=10)
    slow, fast = hub.connect(), hub.connect()
    hub.subscribe(slow, [5])
    hub.subscribe(fast, [5, 6])
    for _ in range(4):
        hub.dispatch(ticks([5, 6, 7]))
    assert slow.queue.qsize() == 3 and slow.dropped == 1  # 4 ticks for token 5, room for 3
    assert fast.queue.qsize() == 3 and fast.dropped == 5
    assert metrics.ws_dropped._value.get() == 6
    hub.dispatch(b"not json")
    hub.dispatch(b'{"instrument_token": [1]}')
    assert metrics.ws_feed_errors.labels("bad_payload")._value.get() == 1
    hub.disconnect(slow)
    hub.disconnect(fast)
    assert hub.by_token == {} and hub.clients == {}
    assert hub.dispatch(ticks([5])) == 0


async def test_either_key_opens_the_socket_and_a_wrong_one_does_not(make_api) -> None:
    api = await make_api(api_key=API_KEY, admin_api_key=ADMIN_KEY)
    for key in (API_KEY, ADMIN_KEY):
        ws = await connect(api, headers={"X-API-Key": key})
        await ws.close()
    assert await refused(api, headers={"X-API-Key": "not-a-key"}) == 401
    assert await refused(api) == 401
