"""The streamer end to end: Kite stand-in → streamer (in this process) → real Redis → a subscriber.

Deadlines in these tests are the behaviours the streamer promises (reconnect within 3 s, stall
caught within STALL_SECONDS, control changes within 1 s), not speed measurements.
"""

from __future__ import annotations

import time
from datetime import date, datetime

import numpy as np
import pytest
from arq.jobs import Job, JobStatus
from pydantic import SecretStr

from ticker.core.contracts import ControlMessage
from ticker.core.greeks import time_to_expiry
from ticker.infra.accounts import account_store
from ticker.infra.control import publish_control
from ticker.infra.kite_rest import KiteApi, KiteHttp
from ticker.infra.kitesim.market import model_vol

from .conftest import Recorder, option_tokens, running_streamer, subscribe, wait_for

pytestmark = pytest.mark.timeout(120)


def time_value(tick: dict) -> float:
    sign = 1 if tick["instrument_type"] == "CE" else -1
    return tick["last_price"] - max(0.0, sign * (tick["underlying_price"] - tick["strike"]))


def iv_error(tick: dict) -> float:
    """|IV - the stand-in's model vol| at the forward the streamer used."""
    expiry = np.array([tick["expiry"]], dtype="datetime64[D]")
    t = float(np.asarray(time_to_expiry(tick["ts"], expiry))[0])
    expected = model_vol(tick["name"], tick["strike"], tick["underlying_price"], t)
    return abs(tick["iv"] - expected)


async def test_options_stream_batched_with_greeks_across_two_accounts(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 100)
    await subscribe(sdb, tokens)
    async with Recorder(sredis, [snames.options, snames.underlying]) as rec, \
            running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 15)
        ticks = rec.ticks(snames.options)
        status, health = streamer.health()
    assert status == 200 and health["status"] == "streaming"
    per_account = {a: d["tokens"] for a, d in health["accounts"].items()}
    assert set(per_account) == {"acc1", "acc2"} and all(n > 0 for n in per_account.values())
    arrays = [doc for _, ch, doc in rec.messages if ch == snames.options]
    assert all(isinstance(doc, list) for doc in arrays) and max(len(doc) for doc in arrays) > 1
    expected_keys = {"instrument_token", "tradingsymbol", "name", "expiry", "strike", "instrument_type",
                     "last_price", "volume", "oi", "bid", "ask", "depth", "exchange_timestamp",
                     "underlying_price", "iv", "delta", "gamma", "theta", "vega", "rho", "model", "ts"}
    for tick in ticks:
        assert expected_keys <= tick.keys()
        assert tick["instrument_type"] in ("CE", "PE") and tick["name"] == "NIFTY" and tick["model"] == "black76"
        assert len(tick["depth"]["buy"]) == len(tick["depth"]["sell"]) == 5
        assert tick["ask"] > 0 and (tick["bid"] is None or tick["ask"] > tick["bid"] > 0)
        date.fromisoformat(tick["expiry"])
        datetime.fromisoformat(tick["exchange_timestamp"])
    # Prices are rounded to the 0.05 tick and the underlying moves between frames, so IV matches the
    # model to within those effects; tiny time values (deep in/out of the money) are all rounding.
    priced = [t for t in ticks if time_value(t) >= 10]
    errors = np.array([iv_error(t) for t in priced])
    assert len(priced) > 20 and np.median(errors) < 5e-4 and errors.max() < 3e-3
    assert all(t["delta"] is not None and t["gamma"] > 0 and t["vega"] > 0 for t in priced)
    assert {t["instrument_type"] for t in rec.ticks(snames.underlying)} == {"INDEX"}
    latest = await sredis.hgetall(snames.latest)
    assert {int(k) for k in latest} >= set(tokens)


async def test_postbacks_are_relayed_to_the_orders_channel(market, sdb, ssettings, snames, sredis):
    await subscribe(sdb, await option_tokens(sdb, 4))
    acc = market.accounts[0]
    async with Recorder(sredis, [snames.orders, snames.options]) as rec, running_streamer(ssettings):
        await wait_for(lambda: rec.tokens(snames.options), 10)
        http = KiteHttp(market.url, timeout=5)
        try:
            order_id = await _any_order(http, acc, sdb)
        finally:
            await http.close()
        await wait_for(lambda: any(d.get("order_id") == order_id for _, ch, d in rec.messages if ch == snames.orders), 10)
    doc = next(d for _, ch, d in rec.messages if ch == snames.orders and d.get("order_id") == order_id)
    assert doc["account_id"] in ("acc1", "acc2")


async def _any_order(http: KiteHttp, acc, sdb) -> str:
    symbol = await sdb.fetchval("SELECT tradingsymbol FROM instruments WHERE instrument_type = 'FUT' LIMIT 1")
    lot = await sdb.fetchval("SELECT lot_size FROM instruments WHERE tradingsymbol = $1", symbol)
    return await KiteApi(http, acc.api_key, acc.access_token).place_order("regular", {
        "exchange": "NFO", "tradingsymbol": symbol, "transaction_type": "BUY", "quantity": lot,
        "product": "NRML", "order_type": "MARKET"})


async def test_dropped_connections_come_back_within_3s(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 60)
    await subscribe(sdb, tokens)
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 15)
        dropped_at = time.time()
        assert market.state.drop() >= 2
        took = await wait_for(lambda: rec.tokens(snames.options, since=dropped_at + 0.2) >= set(tokens), 3.0)
        reconnects = sum(c["connects"] for a in streamer.health()[1]["accounts"].values() for c in a["sockets"])
    assert reconnects >= 4  # two accounts, each connected twice
    print(f"every token ticking again {took:.2f} s after the drop")


async def test_stalled_connection_is_caught_within_stall_seconds(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 20)
    await subscribe(sdb, tokens)
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 15)
        before = _stalls(streamer)
        assert market.state.stall(api_key=market.accounts[0].api_key) == 1
        took = await wait_for(lambda: _stalls(streamer) > before, ssettings.stall_seconds + 0.5)
        stalled_at = time.time()
        await wait_for(lambda: rec.tokens(snames.options, since=stalled_at + 0.2) >= set(tokens), 5)
    print(f"stall detected after {took:.2f} s (STALL_SECONDS={ssettings.stall_seconds})")


def _stalls(streamer) -> float:
    return streamer.metrics.reconnects.labels("stall")._value.get()


async def test_expired_token_fails_over_enqueues_refresh_and_takes_back(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 40)
    await subscribe(sdb, tokens)
    store = account_store(sdb, ssettings)
    sick = market.accounts[1]
    login = {k: SecretStr(getattr(sick, k)) for k in ("user_id", "password", "totp_secret")}
    await store.upsert((await store.get("acc2")).model_copy(update={"auto_login": True, **login}))
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 15)
        assert streamer.health()[1]["accounts"]["acc2"]["tokens"] > 0
        market.state.expire_tokens(api_key=sick.api_key)
        await wait_for(lambda: streamer.health()[1]["accounts"]["acc2"]["token_state"] == "invalid", 5)
        await wait_for(lambda: streamer.health()[1]["accounts"]["acc1"]["tokens"] == len(tokens) + 1, 5)
        moved_at = time.time()
        await wait_for(lambda: rec.tokens(snames.options, since=moved_at) >= set(tokens), 5)
        assert (await store.get("acc2")).token_state == "invalid"
        job = Job(streamer.refreshes.job_of("acc2"), streamer.clients.queue, _queue_name=snames.default_queue)
        assert await job.status() == JobStatus.queued  # no worker runs here
        # What the token job does once it has a new session: store it, announce it.
        http = KiteHttp(market.url, timeout=5)
        try:
            request_token = market.state.auth.issue_request_token(sick.api_key)
            session = await KiteApi(http, sick.api_key).generate_session(request_token, sick.api_secret)
        finally:
            await http.close()
        await store.set_token("acc2", session["access_token"], "valid")
        await publish_control(sredis, snames, ControlMessage(kind="tokens", account_id="acc2", reason="renewed"))
        await wait_for(lambda: streamer.health()[1]["accounts"]["acc2"]["connected"] > 0, 5)
        health = streamer.health()[1]["accounts"]
    assert health["acc2"]["token_state"] == "valid" and health["acc2"]["tokens"] > 0
    assert health["acc1"]["tokens"] + health["acc2"]["tokens"] == len(tokens) + 1  # + the NIFTY index


async def test_control_channel_adds_and_removes_within_1s(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 30)
    await subscribe(sdb, tokens[:20])
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens[:20]), 15)
        connects = _connects(streamer)
        await subscribe(sdb, tokens[20:])
        sent = time.time()
        await publish_control(sredis, snames, ControlMessage(kind="subscriptions", tokens=tokens[20:]))
        added = await wait_for(lambda: rec.tokens(snames.options, since=sent) >= set(tokens[20:]), 1.0)
        await sdb.execute("UPDATE subscriptions SET status = 'inactive' WHERE instrument_token = ANY($1::bigint[])",
                          tokens[:10])
        await publish_control(sredis, snames, ControlMessage(kind="subscriptions", tokens=tokens[:10]))
        removed = await wait_for(lambda: not set(tokens[:10]) & _sim_subscribed(market), 1.0)
        gone_at = time.time() + 0.3  # what was in flight has been published by now
        await wait_for(lambda: rec.tokens(snames.options, since=gone_at + 0.3) >= set(tokens[10:]), 5)
        assert not rec.tokens(snames.options, since=gone_at) & set(tokens[:10])
        pools = streamer.reconciler.pools
        assert sum(len(p.tokens) for p in pools.values()) == 21
        assert _connects(streamer) == connects  # no connection was dropped or reopened
    print(f"control: added in {added:.2f} s, removed in {removed:.2f} s")


def _connects(streamer) -> int:
    return sum(c.connects for p in streamer.reconciler.pools.values() for c in p.conns.values())


def _sim_subscribed(sim) -> set[int]:
    return {t for conn in sim.state.connections() for t in conn.subs}


async def test_modes_per_token_and_a_mode_change_over_control(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 6)
    await subscribe(sdb, tokens[:2], "LTP")
    await subscribe(sdb, tokens[2:4], "QUOTE")
    await subscribe(sdb, tokens[4:], "FULL")
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings):
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens), 15)
        latest = {t["instrument_token"]: t for t in rec.ticks(snames.options)}
        await sdb.execute("UPDATE subscriptions SET requested_mode = 'FULL' WHERE instrument_token = $1", tokens[0])
        changed = time.time()
        await publish_control(sredis, snames, ControlMessage(kind="subscriptions", tokens=tokens[:1]))
        await wait_for(lambda: any(t["instrument_token"] == tokens[0] and t["depth"]
                                   for t in rec.ticks(snames.options, since=changed)), 2)
    ltp, quote, full = latest[tokens[0]], latest[tokens[2]], latest[tokens[4]]
    assert ltp["volume"] is None and ltp["depth"] is None and ltp["last_price"] > 0 and ltp["iv"] is not None
    assert quote["volume"] is not None and quote["depth"] is None and quote["bid"] is None
    assert full["depth"] is not None and full["oi"] is not None and full["exchange_timestamp"]
