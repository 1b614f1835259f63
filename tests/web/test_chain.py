"""`GET /chain` and `/chain/expiries` over the latest-tick hash and the instruments table, and chain
subscriptions on `/ws/ticks`. The expected figures are worked out here from the ticks written,
by brute force, not by the analytics the app uses."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from tests.web.conftest import web_settings
from tests.web.seed import EXPIRY, NIFTY_INDEX, OPTIONS
from ticker.core.clock import IST
from ticker.core.contracts import Names
from ticker.http.state import SERVICES
from ticker.infra.queue.enqueue import names_for
from ticker.infra.stores.tick_history import publish_sequenced

FORWARD, SPOT = 25_830.0, 25_800.0
STRIKES = sorted({o.strike for o in OPTIONS})


@pytest.fixture
def prefix() -> str:
    return f"ticker:chain{uuid.uuid4().hex[:8]}"  # a hash of its own: other tests read theirs


@pytest.fixture
def chain_names(settings, prefix) -> Names:
    return names_for(web_settings(settings, publish_channel_prefix=prefix))


def leg_values(strike: float, is_call: bool) -> dict:
    """Made-up but varied values, so every figure depends on every leg."""
    i = STRIKES.index(strike)
    moneyness = (FORWARD - strike) / 100
    delta = 0.5 + moneyness * 0.1 if is_call else -0.5 + moneyness * 0.1
    return {
        "last_price": round(max(5.0, (moneyness if is_call else -moneyness) * 100 + 120 - 3 * i), 2),
        "bid": 100.0 + i, "ask": 101.0 + i, "volume": 1000 * (i + 1) + (500 if is_call else 0),
        "oi": (90_000 - 7_000 * i) if is_call else (20_000 + 9_000 * i),
        "iv": 0.12 + 0.004 * abs(i - 4) + (0.002 if not is_call else 0.0),
        "delta": round(delta, 6), "gamma": 0.0004 + 0.00001 * i, "theta": -5.0 - i, "vega": 10.0 + i,
        "underlying_price": FORWARD,
    }


async def write_chain(redis, names: Names, received: float) -> dict[int, dict]:
    """The chain's ticks; `received_at` as the streamer writes it (epoch seconds) on the calls, as
    an ISO 8601 time on the puts (both are read)."""
    stamp = datetime.fromtimestamp(received, UTC).isoformat()
    ticks = {}
    for o in OPTIONS:
        ticks[o.instrument_token] = {"instrument_token": o.instrument_token, "tradingsymbol": o.tradingsymbol,
                                     "model": "black76",
                                     "received_at": received if o.instrument_type == "CE" else stamp,
                                     **leg_values(o.strike, o.instrument_type == "CE")}
    await redis.hset(names.latest, mapping={str(t): orjson.dumps(v) for t, v in ticks.items()})
    await redis.hset(names.latest, str(NIFTY_INDEX), orjson.dumps({"instrument_token": NIFTY_INDEX,
                                                                    "last_price": SPOT, "received_at": stamp}))
    return ticks


def brute_max_pain(oi: dict[tuple[float, bool], float]) -> float:
    def payout(settle: float) -> float:
        return sum(n * max(0.0, settle - k) if call else n * max(0.0, k - settle) for (k, call), n in oi.items())
    return min(STRIKES, key=lambda k: (payout(k), k))


async def test_the_chain_carries_every_leg_and_its_figures(make_api, redis, chain_names) -> None:
    api = await make_api(publish_channel_prefix=chain_names.prefix)
    received = time.time() - 2.0
    ticks = await write_chain(redis, chain_names, received)
    first = OPTIONS[0]
    await redis.hset(chain_names.oi_open(_ist_today()), str(first.instrument_token), "60000")

    resp = await api.get("/chain?underlying=NIFTY")
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    assert doc["underlying"] == "NIFTY" and doc["expiry"] == EXPIRY.isoformat()
    assert doc["spot"] == SPOT and doc["forward"] == FORWARD
    assert [r["strike"] for r in doc["rows"]] == STRIKES and doc["strikes"] == len(STRIKES)

    by_side = {}
    for row in doc["rows"]:
        for side, is_call in (("ce", True), ("pe", False)):
            leg = row[side]
            by_side[(row["strike"], is_call)] = leg
            tick = ticks[leg["token"]]
            assert leg["tradingsymbol"] == tick["tradingsymbol"]
            assert leg["ltp"] == tick["last_price"] and leg["oi"] == tick["oi"] and leg["volume"] == tick["volume"]
            assert leg["iv"] == pytest.approx(tick["iv"]) and leg["gamma"] == pytest.approx(tick["gamma"])
            assert 1_000 < leg["age_ms"] < 60_000  # written two seconds ago; a slow machine may add more
    first_leg = by_side[(first.strike, first.instrument_type == "CE")]
    assert first_leg["oi_change"] == ticks[first.instrument_token]["oi"] - 60_000
    assert by_side[(STRIKES[-1], True)]["oi_change"] is None  # no open seen for it

    oi = {(k, c): float(leg["oi"]) for (k, c), leg in by_side.items()}
    volume = {(k, c): float(leg["volume"]) for (k, c), leg in by_side.items()}
    calls_oi = sum(v for (_, c), v in oi.items() if c)
    assert doc["pcr_oi"] == pytest.approx(sum(v for (_, c), v in oi.items() if not c) / calls_oi, rel=1e-12)
    assert doc["pcr_volume"] == pytest.approx(
        sum(v for (_, c), v in volume.items() if not c) / sum(v for (_, c), v in volume.items() if c), rel=1e-12)
    assert doc["max_pain"] == brute_max_pain(oi)
    atm = min(STRIKES, key=lambda k: (abs(k - FORWARD), k))
    assert doc["atm_strike"] == atm
    ce, pe = by_side[(atm, True)], by_side[(atm, False)]
    assert doc["atm_iv"] == pytest.approx((ce["iv"] + pe["iv"]) / 2, rel=1e-12)
    assert doc["straddle"] == pytest.approx(ce["ltp"] + pe["ltp"], rel=1e-12)
    gex = sum((1 if c else -1) * leg["gamma"] * leg["oi"] * FORWARD ** 2 * 0.01 for (_, c), leg in by_side.items())
    assert doc["gex_total"] == pytest.approx(gex, rel=1e-9)
    assert sum(r["gex"] for r in doc["rows"]) == pytest.approx(gex, rel=1e-9)
    assert doc["iv_percentile"] is None  # no earlier day's ATM IV stored yet

    days = {"2026-01-05": 0.10, "2026-01-06": 0.30, "2026-01-07": doc["atm_iv"] - 0.001, _ist_today(): 9.9}
    await redis.hset(chain_names.atm_iv("NIFTY", EXPIRY.isoformat()), mapping={d: repr(v) for d, v in days.items()})
    ranked = await (await api.get("/chain?underlying=NIFTY")).json()
    assert ranked["iv_percentile"] == pytest.approx(100 * 2 / 3)  # two of the three earlier days below; today's left out

    moved = {**ticks[first.instrument_token], "last_price": 777.5, "oi": 61_000}
    await redis.hset(chain_names.latest, str(first.instrument_token), orjson.dumps(moved))
    again = await (await api.get(f"/chain?underlying=NIFTY&expiry={EXPIRY.isoformat()}")).json()
    leg = again["rows"][0]["ce" if first.instrument_type == "CE" else "pe"]
    assert leg["ltp"] == 777.5 and leg["oi_change"] == 1_000  # a new tick is read anew


def _ist_today() -> str:
    return datetime.now(IST).date().isoformat()


async def test_expiries_and_what_is_not_there(api) -> None:
    doc = await (await api.get("/chain/expiries?underlying=NIFTY")).json()
    assert doc == {"underlying": "NIFTY", "expiries": [EXPIRY.isoformat()]}
    for path in ("/chain?underlying=NOPE", "/chain/expiries?underlying=NOPE"):
        resp = await api.get(path)
        assert resp.status == 404
        error = (await resp.json())["error"]
        assert error["code"] == "not_found" and "NOPE" in error["message"]
        assert "NIFTY" in error["details"][0]["message"]  # names what exists
    resp = await api.get("/chain?underlying=NIFTY&expiry=2001-01-01")
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert EXPIRY.isoformat() in error["details"][0]["message"]
    assert (await api.get("/chain?underlying=NIFTY&expiry=soon")).status == 422
    assert (await api.get("/chain")).status == 422


async def test_a_ws_client_gets_the_chain_it_subscribed(make_api, redis, chain_names) -> None:
    api = await make_api(publish_channel_prefix=chain_names.prefix)
    assert await api.app[SERVICES].hub.wait_ready(30)
    await write_chain(redis, chain_names, time.time())
    ws = await api.ws_connect("/ws/ticks")
    assert (await ws.receive_json())["type"] == "connected"
    await ws.send_json({"action": "subscribe_chain", "underlying": "NIFTY"})
    subscribed = await _receive(ws, "chain_subscribed")
    assert subscribed["expiry"] == EXPIRY.isoformat()
    full = (await _receive(ws, "chain"))["data"]
    assert full["full"] is True and len(full["rows"]) == len(STRIKES)

    other = {"underlying": "BANKNIFTY", "expiry": EXPIRY.isoformat(), "rows": [], "full": False}
    mine = {"underlying": "NIFTY", "expiry": EXPIRY.isoformat(), "rows": [{"strike": STRIKES[0]}], "full": False}
    await redis.publish(chain_names.chain, orjson.dumps(other))
    await redis.publish(chain_names.chain, orjson.dumps(mine))
    assert (await _receive(ws, "chain"))["data"] == mine  # not BANKNIFTY's

    await ws.send_json({"action": "subscribe_chain", "underlying": "NIFTY", "expiry": "2001-01-01"})
    error = await _receive(ws, "error")
    assert EXPIRY.isoformat() in error["details"][0]["message"]
    await ws.send_json({"action": "unsubscribe_chain", "underlying": "NIFTY"})
    assert (await _receive(ws, "chain_unsubscribed"))["expiry"] == EXPIRY.isoformat()
    await ws.close()


async def test_a_chain_subscription_resumes_from_history(make_api, redis, chain_names) -> None:
    """Chain messages published while the client was away come back in order, only its chain's,
    without the whole chain again; an unknown epoch gets a gap and the whole chain."""
    api = await make_api(publish_channel_prefix=chain_names.prefix)
    assert await api.app[SERVICES].hub.wait_ready(30)
    await write_chain(redis, chain_names, time.time())

    def update(underlying: str, n: int) -> bytes:
        return orjson.dumps({"underlying": underlying, "expiry": EXPIRY.isoformat(), "rows": [], "n": n, "full": False})

    async def publish(*docs: bytes) -> None:
        await publish_sequenced(redis, chain_names, chain_names.chain, list(docs), envelope=True, history_seconds=300)

    ws = await api.ws_connect("/ws/ticks")
    assert (await ws.receive_json())["type"] == "connected"
    await ws.send_json({"action": "subscribe_chain", "underlying": "NIFTY"})
    await _receive(ws, "chain")  # the whole chain
    await publish(update("NIFTY", 0))
    seen = await _receive(ws, "chain")
    assert seen["data"]["n"] == 0
    await ws.close()
    await publish(update("NIFTY", 1), update("BANKNIFTY", 1))
    await publish(update("NIFTY", 2))

    ws = await api.ws_connect("/ws/ticks")
    assert (await ws.receive_json())["type"] == "connected"
    since = {"offset": seen["offset"], "epoch": seen["epoch"]}
    await ws.send_json({"action": "subscribe_chain", "underlying": "NIFTY", "since": since})
    await _receive(ws, "chain_subscribed")
    await publish(update("NIFTY", 3))
    got = [(await _receive(ws, "chain"))["data"] for _ in range(3)]
    assert [(d["underlying"], d["n"]) for d in got] == [("NIFTY", 1), ("NIFTY", 2), ("NIFTY", 3)]
    await ws.send_json({"action": "subscribe_chain", "underlying": "NIFTY", "since": {**since, "epoch": "gone"}})
    gap = await _receive(ws, "gap")
    assert (gap["stream"], gap["from"], gap["reason"]) == ("chain", since["offset"], "epoch_changed")
    assert (await _receive(ws, "chain"))["data"]["full"] is True
    await ws.close()


async def _receive(ws, kind: str) -> dict:
    async with asyncio.timeout(30):
        while True:
            message = await ws.receive_json()
            if message["type"] == kind:
                return message
