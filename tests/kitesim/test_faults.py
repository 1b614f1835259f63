"""Each REST fault control, shown by its effect on the real SDK (and the admin API over HTTP)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from ticker.infra.kitesim.faults import Faults, RouteFault
from ticker.infra.kitesim.universe import KIND_FUT

# A withheld answer stays withheld this long: far past the clients' 0.2 s timeout, however slowly the
# client's thread gets to run (the stand-in cancels what it still holds when it stops).
HOLD_MS = 10_000


def _kite(sim, timeout: float | None = None) -> KiteConnect:
    acc = sim.account
    return KiteConnect(acc.api_key, acc.access_token, root=sim.url, timeout=timeout)


def _future(sim) -> str:
    uni = sim.state.universe
    return str(uni.symbol[np.flatnonzero(uni.kind == KIND_FUT)[0]])


def _order(kite: KiteConnect, sim, symbol: str, tag: str):
    uni = sim.state.universe
    lot = int(uni.lot[uni.row_of_symbol[("NFO", symbol)]])  # from the instrument master
    return asyncio.to_thread(kite.place_order, variety="regular", exchange="NFO", tradingsymbol=symbol,
                             transaction_type="BUY", quantity=lot, product="NRML", order_type="MARKET",
                             market_protection=-1, tag=tag)


@pytest.mark.parametrize("kind, exc, code", [
    ("429", kex.NetworkException, 429),
    ("500", kex.GeneralException, 500),
    ("502", kex.NetworkException, 502),
    ("503", kex.NetworkException, 503),
])
async def test_status_faults_on_a_route_for_n_calls(kitesim, kind, exc, code):
    kitesim.state.add_fault(route="GET /orders", kind=kind, times=2)
    kite = _kite(kitesim)
    for _ in range(2):
        with pytest.raises(exc) as err:
            await asyncio.to_thread(kite.orders)
        assert err.value.code == code
    assert await asyncio.to_thread(kite.orders) == []  # the third call is clean
    assert await asyncio.to_thread(kite.positions) == {"net": [], "day": []}  # other routes untouched
    assert kitesim.state.faults.describe()["fired"] == {kind: 2}


async def test_timeout_fault_withholds_the_response_and_does_nothing(kitesim):
    kitesim.state.add_fault(route="POST /orders/*", kind="timeout", times=1, delay_ms=HOLD_MS)
    with pytest.raises(requests.exceptions.ReadTimeout):
        await _order(_kite(kitesim, timeout=0.2), kitesim, _future(kitesim), "to1")
    assert kitesim.state.counters.orders_by_tag["to1"] == 0


async def test_accept_then_timeout_places_the_order(kitesim):
    kitesim.state.add_fault(route="POST /orders/*", kind="accept_timeout", times=1, delay_ms=HOLD_MS)
    with pytest.raises(requests.exceptions.ReadTimeout):
        await _order(_kite(kitesim, timeout=0.2), kitesim, _future(kitesim), "att1")
    assert kitesim.state.counters.orders_by_tag["att1"] == 1
    orders = await asyncio.to_thread(_kite(kitesim).orders)
    assert [o["tag"] for o in orders] == ["att1"] and orders[0]["status"] == "COMPLETE"


async def test_accept_then_drop_places_the_order(kitesim):
    kitesim.state.add_fault(route="POST /orders/*", kind="accept_drop", times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        await _order(_kite(kitesim), kitesim, _future(kitesim), "atd1")
    assert [o["tag"] for o in kitesim.state.orders_with_tag("atd1")] == ["atd1"]


async def test_drop_fault_closes_without_placing(kitesim):
    kitesim.state.add_fault(route="POST /orders/*", kind="drop", times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        await _order(_kite(kitesim), kitesim, _future(kitesim), "drop1")
    assert kitesim.state.orders_with_tag("drop1") == []
    await _order(_kite(kitesim), kitesim, _future(kitesim), "drop2")
    assert len(kitesim.state.orders_with_tag("drop2")) == 1


async def test_latency_delays_past_a_short_client_timeout(kitesim):
    kitesim.state.add_fault(route="GET /user/profile", kind="latency", delay_ms=HOLD_MS, times=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        await asyncio.to_thread(_kite(kitesim, timeout=0.2).profile)
    assert (await asyncio.to_thread(_kite(kitesim, timeout=0.2).profile))["user_id"] == "SIM001"


async def test_global_error_rate_and_latency(kitesim):
    kitesim.state.set_latency(error_rate=1.0)
    with pytest.raises((kex.GeneralException, kex.NetworkException)):
        await asyncio.to_thread(_kite(kitesim).profile)
    kitesim.state.set_latency(error_rate=0.0, latency_ms=HOLD_MS)
    with pytest.raises(requests.exceptions.ReadTimeout):
        await asyncio.to_thread(_kite(kitesim, timeout=0.2).profile)
    kitesim.state.reset()
    assert (await asyncio.to_thread(_kite(kitesim).profile))["user_id"] == "SIM001"


def test_rate_is_a_seeded_probability():
    def fired(seed: int) -> list[bool]:
        f = Faults(seed, timeout_seconds=1)
        f.add(RouteFault(route="GET *", kind="500", rate=0.3))
        return [f.decide("GET /quote").before is not None for _ in range(2000)]

    a = fired(1)
    assert a == fired(1) and a != fired(2)
    assert 450 < sum(a) < 750  # ~30% of 2000
    f = Faults(1, timeout_seconds=1)
    f.add(RouteFault(route="POST /orders/*", kind="503"))
    assert f.decide("GET /orders").before is None and f.decide("POST /orders/{variety}").before == "503"


async def test_expire_tokens_one_account(kitesim):
    a, b = (KiteConnect(x.api_key, x.access_token, root=kitesim.url) for x in kitesim.accounts)
    assert kitesim.state.expire_tokens(kitesim.account.api_key) == 1
    with pytest.raises(kex.TokenException):
        await asyncio.to_thread(a.profile)
    assert (await asyncio.to_thread(b.profile))["user_id"] == "SIM002"
    kitesim.state.expire_tokens()
    with pytest.raises(kex.TokenException):
        await asyncio.to_thread(b.profile)


async def test_admin_api_over_http(kitesim):
    base = f"{kitesim.url}/_sim"

    def drive() -> None:
        assert requests.get(f"{base}/health").json()["status"] == "ok"
        r = requests.post(f"{base}/faults", json={"route": "GET /trades", "kind": "503", "times": 1})
        assert r.status_code == 201
        assert requests.post(f"{base}/faults", json={"kind": "nope"}).status_code == 400
        kite = _kite(kitesim)
        with pytest.raises(kex.NetworkException):
            kite.trades()
        assert kite.trades() == []
        counters = requests.get(f"{base}/counters").json()
        assert counters["requests"]["GET /trades"] == 2
        assert requests.post(f"{base}/order_rate_limit", json={"per_second": 3}).json() == {"per_second": 3}
        expired = requests.post(f"{base}/tokens/expire", json={"api_key": "sim_api_key_2"}).json()
        assert expired == {"expired": 1}
        assert requests.post(f"{base}/tokens/expire", json={"api_key": "nobody"}).status_code == 404
        accounts = requests.get(f"{base}/accounts").json()
        assert accounts[1]["live_tokens"] == [] and accounts[0]["live_tokens"] == [kitesim.account.access_token]
        requests.post(f"{base}/latency", json={"latency_ms": 1})
        assert requests.get(f"{base}/state").json()["faults"]["latency_ms"] == 1
        assert requests.post(f"{base}/reset").json() == {"reset": True}
        state = requests.get(f"{base}/state").json()
        assert state["faults"]["latency_ms"] == 0 and state["order_rate_limit"] == 10
        assert requests.get(f"{base}/counters").json()["requests"] == {}

    await asyncio.to_thread(drive)
