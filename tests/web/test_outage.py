"""A real `ticker web` rides through Redis and PostgreSQL outages: it keeps answering (503s in the
envelope, `/health` down with the reason), logs each outage once, and recovers by itself when the
server is back: the hot-path Redis connection, the arq pool, the WebSocket tick feed, the Postgres
pool. Each test takes away a server of its own (never the session's)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.web.conftest import API_KEY, KITE
from tests.web.outages import (
    ThrowawayPostgres,
    ThrowawayRedis,
    _down,
    health,
    redis_for_web,
    redis_ok,
    until,
)
from tests.web.procs import process_env, web_process
from tests.web.seed import CALL, LOT, NIFTY_INDEX, seed_instruments
from ticker.infra.stores.db import create_pool
from ticker.infra.stores.migrate import migrate
from ticker.infra.stores.redis import AutoPipeline, Script, connect

pytestmark = pytest.mark.timeout(300)

HEADERS = {"X-API-Key": API_KEY}
ORDER = {"exchange": "NFO", "tradingsymbol": CALL.tradingsymbol, "transaction_type": "BUY", "quantity": LOT,
         "product": "NRML", "order_type": "MARKET"}
ECHO = Script("return ARGV[1]")


def _env(settings, **extra: str) -> dict[str, str]:
    return process_env(settings, API_KEY=API_KEY, **{k.upper(): v for k, v in KITE.items()}, **extra)


async def _unavailable(resp: aiohttp.ClientResponse) -> dict:
    assert resp.status == 503, await resp.text()
    assert resp.headers["Retry-After"] == "1"
    doc = orjson.loads(await resp.read())
    assert set(doc) == {"error"} and doc["error"]["code"] == "unavailable"
    return doc["error"]


async def _tick_arrives(ws: aiohttp.ClientWebSocketResponse, publisher, channel: str, token: int) -> bool:
    """Publish a tick; True once the WebSocket client receives one (the feed is subscribed)."""
    await publisher.publish(channel, orjson.dumps([{"instrument_token": token, "last_price": 101.5}]))
    try:
        message = await ws.receive_json(timeout=0.2)
    except TimeoutError:
        return False
    return message["type"] == "tick" and message["data"]["instrument_token"] == token


def _count(text: str, needle: str) -> int:
    return sum(needle in line for line in text.splitlines())


async def test_web_rides_through_redis_killed_stopped_and_refused(settings, names, seeded, tmp_path) -> None:
    async with redis_for_web(tmp_path / "redis") as redis:
        env = _env(settings, REDIS_URL=redis.url)
        async with web_process(env) as web, aiohttp.ClientSession(headers=HEADERS) as http:
            assert redis_ok(*await health(http, web.url))
            ws = await http.ws_connect(f"{web.url}/ws/ticks")
            assert (await ws.receive_json())["type"] == "connected"
            await ws.send_json({"action": "subscribe", "tokens": [NIFTY_INDEX]})
            assert (await ws.receive_json())["type"] == "subscribed"
            publisher = connect(redis.url)
            try:
                await until(lambda: _tick_arrives(ws, publisher, names.underlying, NIFTY_INDEX))
                for outage in (redis.kill, redis.stop):  # a reset, then an orderly shutdown
                    outage()
                    await _while_redis_is_down(http, web.url)
                    await ws.send_json({"action": "subscribe", "tokens": [NIFTY_INDEX + 1]})  # no snapshot now
                    assert (await ws.receive_json())["type"] == "subscribed"
                    redis.start()
                    await until(lambda: _redis_healthy(http, web.url))
                    placed = await http.post(f"{web.url}/orders", json=ORDER)  # the pipe reconnected
                    assert placed.status == 202, await placed.text()
                    await until(lambda: _gauge_up(http, web.url))
                    await until(lambda: _tick_arrives(ws, publisher, names.underlying, NIFTY_INDEX))
                    assert not ws.closed  # the client never noticed
            finally:
                await publisher.aclose()
            await ws.close()
        log = await web.output()
    assert _count(log, "redis unavailable") == 2, log
    assert _count(log, "redis is back") == 2, log
    assert "Traceback" not in log and "ERROR" not in log, log


async def _while_redis_is_down(http: aiohttp.ClientSession, url: str) -> None:
    await until(lambda: _down(http, url))
    status, doc = await health(http, url)
    redis_check = doc["checks"]["redis"]
    assert status == 503 and doc["status"] == "down" and doc["checks"]["postgres"]["ok"]
    assert redis_check["reason"] in ("connection refused", "connection reset", "connection closed by the server")
    assert redis_check["down_since"]
    for _ in range(25):  # many failing requests: each a 503, the outage logged once
        err = await _unavailable(await http.post(f"{url}/orders", json=ORDER))
        assert err["message"].startswith("Redis is unavailable")
    await _unavailable(await http.get(f"{url}/quotes?tokens={NIFTY_INDEX}"))
    assert (await http.get(f"{url}/subscriptions")).status == 200  # Postgres alone still serves
    metrics = await (await http.get(f"{url}/metrics")).text()
    assert 'ticker_http_dependency_up{dependency="redis"} 0.0' in metrics
    assert 'ticker_http_dependency_up{dependency="postgres"} 1.0' in metrics


async def _gauge_up(http: aiohttp.ClientSession, url: str) -> bool:
    metrics = await (await http.get(f"{url}/metrics")).text()
    return 'ticker_http_dependency_up{dependency="redis"} 1.0' in metrics


async def _redis_healthy(http: aiohttp.ClientSession, url: str) -> bool:
    return redis_ok(*await health(http, url))


async def test_web_rides_through_postgres_stopped_and_refused(settings) -> None:
    # A folder of its own under /tmp: pytest's basetemp is private to root and pruned by other runs,
    # and the server runs as an unprivileged user that must reach its data directory.
    with tempfile.TemporaryDirectory(prefix="ticker-web-pg-") as folder:
        postgres = ThrowawayPostgres(Path(folder) / "pg")
        try:
            log = await _postgres_outage(settings, postgres)
        finally:
            postgres.close()
    assert _count(log, "postgres unavailable") == 1, log
    assert _count(log, "postgres is back") == 1, log
    assert "Traceback" not in log and "ERROR" not in log, log


async def _postgres_outage(settings, postgres: ThrowawayPostgres) -> str:
    """Run a web on `postgres`, stop and restart it; the web's log."""
    await migrate(postgres.url)
    pool = await create_pool(postgres.url, min_size=1, max_size=2)
    try:
        await seed_instruments(pool)
    finally:
        await pool.close()
    env = _env(settings, DATABASE_URL=postgres.url, REDIS_NAMESPACE=f"{settings.redis_namespace}-pg")
    async with web_process(env) as web, aiohttp.ClientSession(headers=HEADERS) as http:
        assert (await http.get(f"{web.url}/subscriptions")).status == 200
        postgres.stop()
        await until(lambda: _postgres_down(http, web.url))
        status, doc = await health(http, web.url)
        assert doc["checks"]["redis"]["ok"] and doc["checks"]["postgres"]["reason"] == "connection refused"
        for _ in range(25):
            err = await _unavailable(await http.get(f"{web.url}/subscriptions"))
            assert err["message"].startswith("PostgreSQL is unavailable")
        await _unavailable(await http.post(f"{web.url}/orders", json=ORDER))
        postgres.start()
        await until(lambda: _postgres_up(http, web.url))
        assert (await http.get(f"{web.url}/subscriptions")).status == 200
        placed = await http.post(f"{web.url}/orders", json=ORDER, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert placed.status == 202, await placed.text()
    return await web.output()


async def _postgres_down(http: aiohttp.ClientSession, url: str) -> bool:
    status, doc = await health(http, url)
    return status == 503 and not doc["checks"]["postgres"]["ok"]


async def _postgres_up(http: aiohttp.ClientSession, url: str) -> bool:
    status, doc = await health(http, url)
    return status == 200 and doc["checks"]["postgres"]["ok"]


async def test_pipe_fails_fast_while_redis_is_away_and_reconnects_when_it_is_back(tmp_path) -> None:
    redis = ThrowawayRedis(tmp_path / "redis")
    redis.start()
    pipe = AutoPipeline(redis.url)
    try:
        assert await pipe.call(ECHO, [], ["one"]) == b"one"
        redis.kill()
        with pytest.raises(RedisConnectionError):
            await pipe.call(ECHO, [], ["lost"])
        failures = await asyncio.gather(*(pipe.call(ECHO, [], [i]) for i in range(200)), return_exceptions=True)
        assert all(isinstance(f, RedisConnectionError) for f in failures)
        redis.start()  # a fresh server: the script is unknown there and is sent again
        assert await until(lambda: _echo(pipe, "back")) == b"back"
    finally:
        await pipe.close()
        redis.stop()


async def _echo(pipe: AutoPipeline, text: str) -> bytes | None:
    try:
        return await pipe.call(ECHO, [], [text])
    except RedisConnectionError:
        return None



async def test_web_starts_while_redis_and_postgres_are_away_and_serves_once_they_are_back(settings) -> None:
    with tempfile.TemporaryDirectory(prefix="ticker-web-cold-") as folder:
        redis, postgres = ThrowawayRedis(Path(folder) / "redis"), ThrowawayPostgres(Path(folder) / "pg")
        try:
            await migrate(postgres.url)
            postgres.stop()  # neither server is running when the web starts
            env = _env(settings, REDIS_URL=redis.url, DATABASE_URL=postgres.url)
            async with web_process(env) as web, aiohttp.ClientSession(headers=HEADERS) as http:
                status, doc = await health(http, web.url)
                assert status == 503 and doc["status"] == "down"
                assert not doc["checks"]["redis"]["ok"] and not doc["checks"]["postgres"]["ok"]
                await _unavailable(await http.get(f"{web.url}/subscriptions"))
                await _unavailable(await http.get(f"{web.url}/quotes?tokens={NIFTY_INDEX}"))
                redis.start()
                postgres.start()
                await until(lambda: _redis_healthy(http, web.url))
                assert (await http.get(f"{web.url}/subscriptions")).status == 200
                assert (await http.get(f"{web.url}/quotes?tokens={NIFTY_INDEX}")).status == 200
            log = await web.output()
        finally:
            redis.stop()
            postgres.close()
    for dependency in ("redis", "postgres"):
        assert _count(log, f"{dependency} unavailable") == 1, log
        assert _count(log, f"{dependency} is back") == 1, log
    assert "Traceback" not in log and "ERROR" not in log, log
