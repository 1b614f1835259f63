"""Orders from a registered static IP: the stand-in accepts order calls only from 127.0.0.2, a real
proxy (tinyproxy) sends what it forwards from 127.0.0.2, and `KITE_PROXY_URL` points our workers'
order path at it. Orders and GTTs placed through our API complete; the same order sent directly is
refused with Kite's 403 PermissionException."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from tests.proxy_fixtures import BOUND, PASSWORD, USER, EgressProxy, tls_pair
from tests.sim_fixtures import SIM_DEFAULTS
from tests.web.conftest import fresh_database
from tests.web.test_e2e import order_body, running_stack
from tests.web.test_gtt_e2e import completed, gtt_body, leg, on_tick, priced
from ticker.infra.kite.egress import parse_proxy
from ticker.infra.kite.rest import (
    KiteApi,
    KiteHttp,
    KiteUnreachable,
    PermissionException,
)
from ticker.infra.kitesim.config import SimConfig
from ticker.infra.kitesim.server import running_sim


async def test_orders_leave_through_the_static_ip_proxy_and_direct_ones_are_refused(
        _server_urls, redis_url, kitesim_factory, spec_checker, egress_proxy: EgressProxy) -> None:
    sim = await kitesim_factory(order_ip_allowlist=[BOUND])
    with fresh_database(_server_urls[1], f"ticker_egress_{uuid.uuid4().hex[:8]}") as database:
        async with running_stack(database, redis_url, sim, spec_checker, KITE_PROXY_URL=egress_proxy.url) as stack:
            async with stack.http.get(f"{stack.url}/health") as resp:
                text = await resp.text()
                health = await resp.json(content_type=None)
            assert health["kite"]["egress"] == {"order_path": "proxy", "proxy": egress_proxy.where,
                                                "other_rest": "direct"}
            assert PASSWORD not in text

            status, accepted = await stack.call("POST", "/orders", "/orders", json=order_body(stack))
            assert status == 202
            kite_order_id = (await completed(stack, accepted))["kite_order_id"]
            assert sim.state.orders.orders[kite_order_id].status == "COMPLETE"

            last = await priced(stack, 100.0)
            status, accepted = await stack.call("POST", "/gtt", "/gtt", json=gtt_body(
                stack, last, [on_tick(last * 1.3)], [leg(stack, "BUY", last * 1.4)]))
            assert status == 202
            assert (await completed(stack, accepted))["trigger_id"] > 0

            sources = sim.state.counters.snapshot()["requests_by_source"]
            assert sources.get(f"POST /orders/{{variety}} from {BOUND}") == 1
            assert sources.get(f"POST /gtt/triggers from {BOUND}") == 1
            assert not any(k.startswith("POST /orders/{variety}") and not k.endswith(BOUND) for k in sources)

            # the same order, straight from this machine's own address: Kite refuses it
            http = KiteHttp(sim.url)
            try:
                api = KiteApi(http, sim.account.api_key, sim.account.access_token)
                with pytest.raises(PermissionException) as refused:
                    await api.place_order("regular", order_body(stack, market_protection=-1))
            finally:
                await http.close()
            assert refused.value.code == 403 and "127.0.0.1" in str(refused.value)
            assert sim.state.order_ips.refused == {"127.0.0.1": 1}
            assert len(sim.state.orders.orders_of(sim.account.api_key)) == 1


async def test_proxy_all_sends_every_rest_call_through_the_proxy(kitesim_factory, egress_proxy: EgressProxy) -> None:
    sim = await kitesim_factory(order_ip_allowlist=[BOUND])
    http = KiteHttp(sim.url, egress=parse_proxy(egress_proxy.url, all_rest=True))
    try:
        api = KiteApi(http, sim.account.api_key, sim.account.access_token)
        await api.orders()
        await api.profile()
    finally:
        await http.close()
    sources = sim.state.counters.snapshot()["requests_by_source"]
    assert sources == {f"GET /orders from {BOUND}": 1, f"GET /user/profile from {BOUND}": 1}


async def test_https_orders_tunnel_through_the_proxy_with_its_credentials(tmp_path, egress_proxy: EgressProxy) -> None:
    """Kite is https: through the proxy that is a CONNECT tunnel, authenticated on the CONNECT."""
    server_tls, client_tls = tls_pair(tmp_path)
    config = SimConfig(**{**SIM_DEFAULTS, "order_ip_allowlist": [BOUND]})
    async with running_sim(config, ssl_context=server_tls) as sim:
        assert sim.url.startswith("https://")
        row = next(i for i in range(len(sim.state.universe)) if sim.state.universe.lot[i] > 1
                   and sim.state.universe.exchange_of(i) == "NFO")
        order = {"exchange": "NFO", "tradingsymbol": str(sim.state.universe.symbol[row]), "transaction_type": "BUY",
                 "quantity": int(sim.state.universe.lot[row]), "product": "NRML", "order_type": "MARKET",
                 "market_protection": -1}
        async with contextlib.AsyncExitStack() as stack:
            good = KiteHttp(sim.url, egress=parse_proxy(egress_proxy.url), ssl_context=client_tls)
            wrong = KiteHttp(sim.url, egress=parse_proxy(f"http://{USER}:wrong@{egress_proxy.where}"),
                             ssl_context=client_tls)
            stack.push_async_callback(good.close)
            stack.push_async_callback(wrong.close)
            account = sim.account
            placed = await KiteApi(good, account.api_key, account.access_token).place_order("regular", order)
            order_id = placed.order_id
            assert sim.state.orders.orders[order_id].status == "COMPLETE"
            with pytest.raises(KiteUnreachable) as refused:  # a proxy refusing us: nothing reached Kite
                await KiteApi(wrong, account.api_key, account.access_token).place_order("regular", order)
            assert "refused the connection (HTTP 40" in str(refused.value)  # tinyproxy answers 401 or 407
            assert "wrong" not in str(refused.value)
        sources = sim.state.counters.snapshot()["requests_by_source"]
        assert sources == {f"POST /orders/{{variety}} from {BOUND}": 1}
    assert "CONNECT" in egress_proxy.log.read_text()
