"""Kite's static-IP rule in the stand-in: with an allowlist, order calls (place, modify, cancel, GTT
writes) from any other address are refused with 403 PermissionException, through the real kiteconnect
SDK; everything else answers any address. Set on the command line or over the admin API."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from ticker.infra.kitesim.cli import config_from, parser

from .test_rules2026 import _contract, _kite, _place


async def _admin(sim, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.request(method, sim.url + path, json=body) as r:
        return r.status, await r.json()


def test_the_command_line_takes_an_allowlist() -> None:
    config = config_from(parser().parse_args(["--order-ip-allowlist", "127.0.0.2, 10.0.0.7"]))
    assert config.order_ip_allowlist == ["10.0.0.7", "127.0.0.2"]
    assert config_from(parser().parse_args([])).order_ip_allowlist == []
    with pytest.raises(ValueError, match="not an IP address"):
        config_from(parser().parse_args(["--order-ip-allowlist", "127.0.0.2,example.com"]))


async def test_orders_from_an_address_not_on_the_list_are_refused(kitesim_factory) -> None:
    sim = await kitesim_factory(order_ip_allowlist=["127.0.0.2"])
    kite = _kite(sim)
    symbol, lot, _ = _contract(sim, "NIFTY")
    with pytest.raises(kex.PermissionException, match="not allowed from IP 127.0.0.1") as refused:
        await _place(kite, symbol, lot, market_protection=-1)
    assert refused.value.code == 403
    gtt = {"trigger_type": "single", "tradingsymbol": symbol, "exchange": "NFO", "trigger_values": [1.0],
           "last_price": 100.0, "orders": [{"transaction_type": "BUY", "quantity": lot, "order_type": "LIMIT",
                                             "product": "NRML", "price": 1.0}]}
    with pytest.raises(kex.PermissionException):
        await asyncio.to_thread(kite.place_gtt, **gtt)
    with pytest.raises(kex.PermissionException):
        await asyncio.to_thread(kite.cancel_order, "regular", "123")
    # reads answer any address
    assert await asyncio.to_thread(kite.orders) == []
    assert await asyncio.to_thread(kite.get_gtts) == []
    assert sim.state.orders.orders == {}
    status, doc = await _admin(sim, "GET", "/_sim/order_ip_allowlist")
    assert status == 200 and doc == {"ips": ["127.0.0.2"], "refused": {"127.0.0.1": 3}}


async def test_the_admin_api_sets_and_lifts_the_list(kitesim) -> None:
    kite: KiteConnect = _kite(kitesim)
    symbol, lot, _ = _contract(kitesim, "NIFTY")
    assert (await _admin(kitesim, "GET", "/_sim/order_ip_allowlist"))[1]["ips"] == []  # default: any address
    status, doc = await _admin(kitesim, "POST", "/_sim/order_ip_allowlist", {"ips": ["127.0.0.2"]})
    assert status == 200 and doc["ips"] == ["127.0.0.2"]
    with pytest.raises(kex.PermissionException):
        await _place(kite, symbol, lot, market_protection=-1)
    status, doc = await _admin(kitesim, "POST", "/_sim/order_ip_allowlist", {"ips": ["127.0.0.2", "127.0.0.1"]})
    assert status == 200
    assert await _place(kite, symbol, lot, market_protection=-1)
    status, doc = await _admin(kitesim, "POST", "/_sim/order_ip_allowlist", {"ips": ["not-an-ip"]})
    assert status == 400 and doc["error"]["details"][0]["field"] == "ips"
    status, doc = await _admin(kitesim, "POST", "/_sim/order_ip_allowlist", {"ips": []})
    assert status == 200 and doc["ips"] == []
    assert await _place(kite, symbol, lot, market_protection=-1)
    assert json.loads(json.dumps(kitesim.state.describe()["order_ip_allowlist"]))["ips"] == []
