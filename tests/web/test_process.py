"""The real `ticker web` process: refusing to start in production without strong keys, the keys
enforced when set, requests aiohttp cannot parse answered in the envelope, SIGTERM draining
in-flight requests and sending WebSocket clients away."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import orjson
import pytest

from tests.web.conftest import ADMIN_KEY, API_KEY, KITE
from tests.web.outages import until
from tests.web.procs import free_port, process_env, spawn, web_process
from tests.web.seed import CALL, LOT
from tests.web.spec_check import SpecChecker
from ticker.infra.stores.crypto import new_key

KITE_ENV = {k.upper(): v for k, v in KITE.items()}


async def checked(checker: SpecChecker, resp: aiohttp.ClientResponse, template: str) -> dict:
    body = await resp.read()
    checker.check(resp.method, template, resp.status, resp.content_type, body)
    return await resp.json()


async def _refused(settings, **env: str) -> str:
    proc = await spawn("web", "--port", str(free_port()), env=process_env(settings, ENVIRONMENT="production", **env))
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "Traceback" not in err.decode()
    return err.decode()


async def test_production_without_an_api_key_refuses_to_start(settings) -> None:
    err = await _refused(settings)
    assert "API_KEY is required" in err and "ADMIN_API_KEY is required" in err


@pytest.mark.parametrize(("keys", "rule"), [
    ({"API_KEY": " " * 32, "ADMIN_API_KEY": ADMIN_KEY}, "API_KEY must contain at least 10 distinct characters"),
    ({"API_KEY": API_KEY}, "ADMIN_API_KEY is required"),
    ({"API_KEY": API_KEY, "ADMIN_API_KEY": API_KEY}, "ADMIN_API_KEY must differ from API_KEY"),
    ({"API_KEY": API_KEY, "ADMIN_API_KEY": "admin"}, "ADMIN_API_KEY must be at least 32 characters"),
])
async def test_production_with_weak_or_shared_keys_refuses_to_start_naming_the_rule(settings, keys, rule) -> None:
    assert rule in await _refused(settings, ACCOUNT_ENCRYPTION_KEY=new_key(), **keys)


async def test_production_with_keys_requires_them(settings, spec_checker, seeded) -> None:
    env = process_env(settings, ENVIRONMENT="production", API_KEY=API_KEY, ADMIN_API_KEY=ADMIN_KEY,
                      ACCOUNT_ENCRYPTION_KEY=new_key())
    async with web_process(env) as web, aiohttp.ClientSession() as http:
        anonymous = await http.get(f"{web.url}/subscriptions")
        assert anonymous.status == 401
        await checked(spec_checker, anonymous, "/subscriptions")
        keyed = await http.get(f"{web.url}/subscriptions", headers={"X-API-Key": API_KEY})
        assert keyed.status == 200
        await checked(spec_checker, keyed, "/subscriptions")
        trading = await http.delete(f"{web.url}/accounts/primary", headers={"X-API-Key": API_KEY})
        assert trading.status == 403
        assert (await checked(spec_checker, trading, "/accounts/{account_id}"))["error"]["code"] == "forbidden"
        admin = await http.get(f"{web.url}/accounts", headers={"X-API-Key": ADMIN_KEY})
        assert admin.status == 200
        await checked(spec_checker, admin, "/accounts")
        health = await http.get(f"{web.url}/health")
        assert (await checked(spec_checker, health, "/health"))["checks"]["redis"]["ok"] is True
    assert not spec_checker.take_failures()


async def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return int(head.split()[1]), body


async def test_oversized_and_unknown_requests_get_the_envelope_from_the_process(settings, seeded) -> None:
    secret = "tok" + "e" * 20_000
    async with web_process(process_env(settings, **KITE_ENV)) as web:
        long_url = f"GET /instruments?q={secret} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        big_header = f"GET /health HTTP/1.1\r\nHost: t\r\nX-Note: {secret}\r\n\r\n".encode()
        for request, status, code in ((long_url, 414, "uri_too_long"), (big_header, 431, "headers_too_large"),
                                      (b"GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 404,
                                       "not_found"),
                                      (b"PUT /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 405,
                                       "method_not_allowed")):
            got, body = await _raw(web.url, request)
            error = orjson.loads(body)["error"]
            assert (got, error["code"]) == (status, code) and set(error) == {"code", "message", "details"}
            assert not re.search(b"toke{5}", body)  # nothing sent comes back
    log = await web.output()
    assert "Traceback" not in log and "toke" not in log, log


async def _inflight(http: aiohttp.ClientSession, url: str) -> float:
    text = await (await http.get(f"{url}/metrics")).text()
    return float(re.search(r"^ticker_http_inflight (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


async def test_sigterm_drains_in_flight_requests_and_closes_websockets(settings, spec_checker, seeded) -> None:
    async with web_process(process_env(settings, **KITE_ENV)) as web, aiohttp.ClientSession() as http:
        order = {"exchange": "NFO", "tradingsymbol": CALL.tradingsymbol, "transaction_type": "BUY",
                 "quantity": LOT, "product": "NRML", "order_type": "MARKET"}
        job = await checked(spec_checker, await http.post(f"{web.url}/orders", json=order), "/orders")
        ws = await http.ws_connect(f"{web.url}/ws/ticks")
        assert (await ws.receive_json())["type"] == "connected"
        closing = asyncio.create_task(ws.receive())  # a client reads all the time
        before = await _inflight(http, web.url)
        poll = asyncio.create_task(http.get(f"{web.url}{job['status_url']}?wait=25"))
        await until(lambda: _more_inflight(http, web.url, before))  # the long-poll is being served
        web.proc.terminate()
        resp = await poll
        assert resp.status == 200
        assert (await checked(spec_checker, resp, "/jobs/{job_id}"))["status"] == "queued"
        assert (await closing).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1001
        async with asyncio.timeout(60):
            assert await web.proc.wait() == 0
    assert not spec_checker.take_failures()


async def _more_inflight(http: aiohttp.ClientSession, url: str, before: float) -> bool:
    return await _inflight(http, url) > before
