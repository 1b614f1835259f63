"""Kite's per-user rate limits through the real SDK: 429 NetworkException "Too many requests" beyond
each limit, counted per Kite user (not per api_key), visible by route on the admin API.

The stand-in's limit clock is pinned in these tests so every request falls in one window however
slow the machine is; the windows' own arithmetic is shown with explicit times."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import numpy as np
import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from ticker.core.clock import IST
from ticker.infra.kitesim.api_limits import LimitSettings, RateLimits
from ticker.infra.kitesim.config import SimAccount
from ticker.infra.kitesim.universe import KIND_CE

TOO_MANY = {"status": "error", "message": "Too many requests", "data": None, "error_type": "NetworkException"}


def _pin(sim, at: float = 1000.0) -> list[float]:
    """Freeze the stand-in's limit clock; returns a cell the test may move."""
    now = [at]
    sim.state.limits.mono = lambda: now[0]
    return now


def _kite(sim, i: int = 0) -> KiteConnect:
    acc = sim.accounts[i]
    return KiteConnect(acc.api_key, acc.access_token, root=sim.url)


async def _throttled(call) -> None:
    with pytest.raises(kex.NetworkException, match="Too many requests") as err:
        await call
    assert err.value.code == 429


async def test_quote_is_one_request_a_second(kitesim):
    _pin(kitesim)
    kite = _kite(kitesim)
    assert await asyncio.to_thread(kite.ltp, "NSE:NIFTY 50")
    await _throttled(asyncio.to_thread(kite.quote, "NSE:NIFTY 50"))   # ltp, quote and ohlc share it
    await _throttled(asyncio.to_thread(kite.ohlc, "NSE:NIFTY 50"))
    assert await asyncio.to_thread(kite.orders) == []                  # other endpoints are counted apart
    counters = kitesim.state.counters
    assert counters.rate_limited_by_route == {"GET /quote": 1, "GET /quote/ohlc": 1}
    assert counters.rate_limited_by_user == {kitesim.account.user_id: 2}


async def test_historical_is_three_requests_a_second(kitesim):
    _pin(kitesim)
    kite = _kite(kitesim)
    to = datetime.now(IST).replace(tzinfo=None)
    for _ in range(3):
        await asyncio.to_thread(kite.historical_data, 256265, to - timedelta(days=1), to, "day")
    await _throttled(asyncio.to_thread(kite.historical_data, 256265, to - timedelta(days=1), to, "day"))


async def test_other_endpoints_are_ten_requests_a_second_then_room_again(kitesim):
    now = _pin(kitesim)
    kite = _kite(kitesim)
    for _ in range(10):
        await asyncio.to_thread(kite.positions)
    await _throttled(asyncio.to_thread(kite.profile))
    now[0] += 1.0  # a second later the window has room again
    assert (await asyncio.to_thread(kite.profile))["user_id"] == kitesim.account.user_id
    assert kitesim.state.counters.rate_limited_by_route == {"GET /user/profile": 1}


async def test_orders_are_ten_a_second_and_four_hundred_a_minute(kitesim):
    now = _pin(kitesim)
    uni = kitesim.state.universe
    row = int(np.flatnonzero(uni.kind == KIND_CE)[0])
    kite = _kite(kitesim)

    def place() -> str:
        return kite.place_order(variety="regular", exchange="NFO", tradingsymbol=str(uni.symbol[row]),
                                transaction_type="BUY", quantity=int(uni.lot[row]), product="NRML",
                                order_type="LIMIT", price=0.05)

    for _ in range(10):
        await asyncio.to_thread(place)
    await _throttled(asyncio.to_thread(place))                          # the eleventh in one second
    for _ in range(39):                                                  # 390 more, 10 a second
        now[0] += 1.0
        for _ in range(10):
            await asyncio.to_thread(place)
    now[0] += 1.0
    await _throttled(asyncio.to_thread(place))                          # the 401st inside a minute
    now[0] += 60.0
    assert await asyncio.to_thread(place)
    assert kitesim.state.counters.rate_limited[kitesim.account.api_key] == 2
    assert len(kitesim.state.orders.orders) == 401


async def test_limits_are_per_user_not_per_api_key(kitesim_factory):
    # Two apps (api keys) of one Kite user share the user's limits; another user has its own.
    sim = await kitesim_factory(accounts=[SimAccount(api_key="app_one", user_id="AB1234"),
                                          SimAccount(api_key="app_two", user_id="AB1234"),
                                          SimAccount(api_key="app_three", user_id="CD5678")])
    _pin(sim)
    assert await asyncio.to_thread(_kite(sim, 0).ltp, "NSE:NIFTY 50")
    await _throttled(asyncio.to_thread(_kite(sim, 1).ltp, "NSE:NIFTY 50"))
    assert await asyncio.to_thread(_kite(sim, 2).ltp, "NSE:NIFTY 50")
    assert sim.state.counters.rate_limited_by_user == {"AB1234": 1}


async def test_the_429_envelope_and_counters_over_the_admin_api(kitesim):
    _pin(kitesim)
    acc = kitesim.account
    headers = {"X-Kite-Version": "3", "Authorization": f"token {acc.api_key}:{acc.access_token}"}

    def two_quotes() -> requests.Response:
        requests.get(f"{kitesim.url}/quote/ltp", params={"i": "NSE:NIFTY 50"}, headers=headers, timeout=10)
        return requests.get(f"{kitesim.url}/quote/ltp", params={"i": "NSE:NIFTY 50"}, headers=headers, timeout=10)

    r = await asyncio.to_thread(two_quotes)
    assert r.status_code == 429 and r.json() == TOO_MANY
    counters = (await asyncio.to_thread(requests.get, f"{kitesim.url}/_sim/counters", timeout=10)).json()
    assert counters["rate_limited_by_route"] == {"GET /quote/ltp": 1}
    assert counters["rate_limited_by_user"] == {acc.user_id: 1}
    limits = (await asyncio.to_thread(requests.get, f"{kitesim.url}/_sim/rate_limits", timeout=10)).json()
    assert limits == LimitSettings().__dict__


async def test_limits_can_be_switched_off(kitesim_factory):
    sim = await kitesim_factory(rate_limits=False)
    _pin(sim)
    kite = _kite(sim)
    for _ in range(3):
        assert await asyncio.to_thread(kite.ltp, "NSE:NIFTY 50")
    r = await asyncio.to_thread(requests.post, f"{sim.url}/_sim/rate_limits", json={"enabled": True}, timeout=10)
    assert r.json()["enabled"] is True
    assert await asyncio.to_thread(kite.ltp, "NSE:NIFTY 50")
    await _throttled(asyncio.to_thread(kite.ltp, "NSE:NIFTY 50"))


def test_order_day_limit_counts_per_ist_day():
    limits = RateLimits(LimitSettings(orders_per_day=5000))
    day = datetime(2026, 12, 3, 10, 0, tzinfo=IST).timestamp()
    for i in range(5000):  # spread over the day so the second and minute windows never bind
        assert limits.admit("AB1234", "orders", mono=i * 10.0, wall=day + i)
    assert not limits.admit("AB1234", "orders", mono=60_000.0, wall=day + 6000)
    assert limits.admit("CD5678", "orders", mono=60_000.0, wall=day + 6000)
    midnight = datetime(2026, 12, 4, 0, 0, tzinfo=IST).timestamp()
    assert limits.admit("AB1234", "orders", mono=60_010.0, wall=midnight)
