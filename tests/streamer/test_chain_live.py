"""The option chain end to end: stand-in → streamer → Redis → the chain stream and `GET /chain`.

The expected figures come from the stand-in itself: its volatility smile (`model_vol`) for the
ATM IV, its open interest for the put-call ratio, max pain and gamma exposure. The stand-in keeps
trading while we read, so OI-based figures are compared within the few lots a trade moves them.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ticker.http.app import create_app
from ticker.infra.kitesim.market import model_vol

from .conftest import BOUND, Recorder, running_streamer, subscribe, wait_for

pytestmark = pytest.mark.timeout(180)


def stand_in_oi(kitesim, tokens: list[int]) -> dict[int, float]:
    market = kitesim.state.market
    rows = market.uni.rows_of(tokens)
    return dict(zip(tokens, market.oi[rows].astype(float).tolist(), strict=True))


async def served_whole(api: TestClient, path: str) -> dict:
    """The chain once the latest-tick hash (written LATEST_SNAPSHOT_MS behind the stream) holds
    the spot and every leg."""
    async with asyncio.timeout(BOUND):
        while True:
            resp = await api.get(path)
            assert resp.status == 200, await resp.text()
            doc = await resp.json()
            if doc["spot"] and all(r["ce"] and r["ce"]["ltp"] and r["pe"] and r["pe"]["ltp"] for r in doc["rows"]):
                return doc
            await asyncio.sleep(0.1)


async def chain_over_ws(api: TestClient, expiry: str) -> tuple[dict, dict]:
    """subscribe_chain on /ws/ticks: the whole chain first, then one the streamer published."""
    ws = await api.ws_connect("/ws/ticks")
    try:
        await ws.send_json({"action": "subscribe_chain", "underlying": "NIFTY", "expiry": expiry})
        chains = []
        async with asyncio.timeout(BOUND):
            while len(chains) < 2:
                message = await ws.receive_json()
                assert message["type"] != "error", message
                if message["type"] == "chain":
                    chains.append(message["data"])
        return chains[0], chains[1]
    finally:
        await ws.close()


def brute_max_pain(legs: list[tuple[float, bool, float]]) -> float:
    strikes = sorted({k for k, _, _ in legs})

    def payout(settle: float) -> float:
        return sum(n * max(0.0, settle - k) if call else n * max(0.0, k - settle) for k, call, n in legs)
    return min(strikes, key=lambda s: (payout(s), s))


async def test_the_chain_streams_and_serves_the_stand_ins_figures(market, sdb, ssettings, snames, sredis):
    settings = ssettings.model_copy(update={"chain_interval_ms": 200})
    expiries = [r[0] for r in await sdb.fetch(
        "SELECT DISTINCT expiry FROM instruments WHERE name = 'NIFTY' AND instrument_type = 'CE' ORDER BY expiry")]
    expiry = expiries[min(1, len(expiries) - 1)]  # not the one expiring today: its IVs are noise
    listed = await sdb.fetch("SELECT instrument_token, strike, instrument_type FROM instruments WHERE name = 'NIFTY' "
                             "AND expiry = $1 AND instrument_type IN ('CE', 'PE') AND is_active", expiry)
    strikes = sorted({r["strike"] for r in listed})
    await subscribe(sdb, [r["instrument_token"] for r in listed])
    async with Recorder(sredis, [snames.chain]) as rec, running_streamer(settings):
        def streamed() -> list[dict]:
            return [doc for _, _, doc in rec.messages if doc["expiry"] == expiry.isoformat()]

        def every_strike_seen() -> bool:
            seen = {r["strike"] for doc in streamed() for r in doc["rows"] if r["ce"] and r["pe"]}
            return seen == set(strikes) and streamed()[-1]["atm_iv"] is not None

        await wait_for(every_strike_seen)
        async with TestClient(TestServer(create_app(settings))) as api:
            doc = await served_whole(api, f"/chain?underlying=NIFTY&expiry={expiry.isoformat()}")
            oi = stand_in_oi(market, [leg["token"] for r in doc["rows"] for leg in (r["ce"], r["pe"])])
            full, update = await chain_over_ws(api, expiry.isoformat())
    assert full["full"] is True and [r["strike"] for r in full["rows"]] == strikes
    assert update["full"] is False and update["expiry"] == expiry.isoformat() and update["rows"]

    assert doc["underlying"] == "NIFTY" and [r["strike"] for r in doc["rows"]] == strikes
    for summary in (doc, streamed()[-1]):
        forward, t = summary["forward"], summary["t"]
        assert summary["spot"] > 0 and forward > 0 and t > 0
        assert abs(summary["atm_iv"] - model_vol("NIFTY", summary["atm_strike"], forward, t)) < 3e-3
        assert summary["atm_strike"] == min(strikes, key=lambda k: (abs(k - forward), k))

    legs = [(r["strike"], side == "ce", r[side]) for r in doc["rows"] for side in ("ce", "pe")]
    assert all(leg["ltp"] > 0 and leg["oi"] > 0 and leg["iv"] is not None for _, _, leg in legs)
    # OI as the stand-in holds it now: within a few lots of what its last tick carried
    assert all(abs(leg["oi"] - oi[leg["token"]]) <= 0.02 * oi[leg["token"]] for _, _, leg in legs)
    calls = sum(oi[leg["token"]] for _, call, leg in legs if call)
    puts = sum(oi[leg["token"]] for _, call, leg in legs if not call)
    assert doc["pcr_oi"] == pytest.approx(puts / calls, rel=0.01)
    step = float(np.min(np.diff(strikes)))
    assert abs(doc["max_pain"] - brute_max_pain([(k, c, oi[leg["token"]]) for k, c, leg in legs])) <= step
    gex = sum((1 if c else -1) * leg["gamma"] * oi[leg["token"]] * doc["forward"] ** 2 * 0.01 for _, c, leg in legs)
    assert doc["gex_total"] == pytest.approx(gex, rel=0.03, abs=1e-6 * abs(gex) + 1.0)
