"""What the streamer reads from Postgres, and what it shows on /health and /metrics."""

from __future__ import annotations

from datetime import date, timedelta

from aiohttp.test_utils import TestClient, TestServer

from ticker.streamer.control.demand import load_demand
from ticker.streamer.process.status_app import build_app

from .conftest import Recorder, option_tokens, running_streamer, subscribe, wait_for


async def test_unknown_retired_and_expired_subscriptions_are_deactivated(market, sdb):
    tokens = await option_tokens(sdb, 3)
    await subscribe(sdb, tokens)
    await sdb.execute(
        """INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, name, expiry, strike,
               instrument_type, segment, exchange, is_active)
           VALUES (4242, 16, 'OLD25JAN100CE', 'NIFTY', $1, 100, 'CE', 'NFO-OPT', 'NFO', true),
                  (4243, 16, 'GONE25JAN100CE', 'NIFTY', NULL, 100, 'CE', 'NFO-OPT', 'NFO', false)
           ON CONFLICT DO NOTHING""", date.today() - timedelta(days=3))
    await subscribe(sdb, [4242, 4243, 77])
    demand = await load_demand(sdb, date.today(), underlyings=True)
    assert demand.deactivated == {4242: "instrument expired", 4243: "instrument retired", 77: "unknown instrument"}
    rows = await sdb.fetch("SELECT instrument_token, status, deactivated_reason FROM subscriptions"
                           " WHERE instrument_token = ANY($1::bigint[])", [4242, 4243, 77])
    assert {r["status"] for r in rows} == {"inactive"} and all(r["deactivated_reason"] for r in rows)
    wanted = {w.token: w.mode for w in demand.wanted}
    assert set(tokens) < set(wanted) and wanted[256265] == "full"  # NIFTY 50 comes along for the forward
    assert {i.instrument_token for i in demand.instruments} == set(wanted)
    await sdb.execute("DELETE FROM instruments WHERE instrument_token IN (4242, 4243)")


async def test_health_and_metrics_endpoints(market, sdb, ssettings, snames, sredis):
    await subscribe(sdb, await option_tokens(sdb, 10))
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options))
        await wait_for(lambda: streamer.backpressure.report(0)["received_per_second"] > 0)
        async with TestClient(TestServer(build_app(streamer.health, streamer.metrics.registry))) as client:
            health = await client.get("/health")
            doc = await health.json()
            metrics = await (await client.get("/metrics")).text()
        market.state.expire_tokens()  # every account's token: nothing can stream any more
        await wait_for(lambda: streamer.health()[1]["unplaced_tokens"] == 11)  # re-planned without them
        code, down = streamer.health()
    assert health.status == 200 and doc["status"] == "streaming" and doc["redis"]["breaker"] == "closed"
    assert doc["backpressure"]["level"] == "healthy" and doc["task_failures"] == 0
    acc = doc["accounts"]["acc1"]
    assert {"owned", "connections", "connected", "tokens", "last_tick_age", "token_state"} <= acc.keys()
    for name in ("ticker_streamer_ticks_received_total", "ticker_streamer_ticks_published_total",
                 "ticker_streamer_batch_size_bucket", "ticker_streamer_publish_seconds_bucket",
                 "ticker_streamer_connections", "ticker_streamer_reconnects_total"):
        assert name in metrics
    assert code == 503 and down["status"] == "down"
    assert {a["token_state"] for a in down["accounts"].values()} == {"invalid"}
