"""The real `ticker web` process: refusing to start in production without a key, the key enforced
when set, SIGTERM draining in-flight requests and sending WebSocket clients away."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.web.conftest import API_KEY, KITE
from tests.web.procs import free_port, process_env, spawn, web_process
from tests.web.seed import CALL, LOT
from tests.web.spec_check import SpecChecker
from ticker.infra.crypto import new_key

KITE_ENV = {k.upper(): v for k, v in KITE.items()}


async def checked(checker: SpecChecker, resp: aiohttp.ClientResponse, template: str) -> dict:
    body = await resp.read()
    checker.check(resp.method, template, resp.status, resp.content_type, body)
    return await resp.json()


async def test_production_without_an_api_key_refuses_to_start(settings) -> None:
    proc = await spawn("web", "--port", str(free_port()), env=process_env(settings, ENVIRONMENT="production"))
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 2
    assert "API_KEY" in err.decode() and "Traceback" not in err.decode()


async def test_production_with_a_key_requires_it(settings, spec_checker, seeded) -> None:
    env = process_env(settings, ENVIRONMENT="production", API_KEY=API_KEY, ACCOUNT_ENCRYPTION_KEY=new_key())
    async with web_process(env) as web, aiohttp.ClientSession() as http:
        anonymous = await http.get(f"{web.url}/subscriptions")
        assert anonymous.status == 401
        await checked(spec_checker, anonymous, "/subscriptions")
        keyed = await http.get(f"{web.url}/subscriptions", headers={"X-API-Key": API_KEY})
        assert keyed.status == 200
        await checked(spec_checker, keyed, "/subscriptions")
        health = await http.get(f"{web.url}/health")
        assert (await checked(spec_checker, health, "/health"))["checks"]["redis"]["ok"] is True
    assert not spec_checker.take_failures()


async def test_sigterm_drains_in_flight_requests_and_closes_websockets(settings, spec_checker, seeded) -> None:
    async with web_process(process_env(settings, **KITE_ENV)) as web, aiohttp.ClientSession() as http:
        order = {"exchange": "NFO", "tradingsymbol": CALL.tradingsymbol, "transaction_type": "BUY",
                 "quantity": LOT, "product": "NRML", "order_type": "MARKET"}
        job = await checked(spec_checker, await http.post(f"{web.url}/orders", json=order), "/orders")
        ws = await http.ws_connect(f"{web.url}/ws/ticks")
        assert (await ws.receive_json())["type"] == "connected"
        closing = asyncio.create_task(ws.receive())  # a client reads all the time
        poll = asyncio.create_task(http.get(f"{web.url}{job['status_url']}?wait=25"))
        await asyncio.sleep(0.5)  # the long-poll is in flight
        web.proc.terminate()
        resp = await poll
        assert resp.status == 200
        assert (await checked(spec_checker, resp, "/jobs/{job_id}"))["status"] == "queued"
        assert (await closing).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1001
        async with asyncio.timeout(20):
            assert await web.proc.wait() == 0
    assert not spec_checker.take_failures()
