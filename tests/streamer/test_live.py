"""The streamer end to end: Kite stand-in → streamer (in this process) → real Redis → a subscriber.

Every wait is on a condition, bounded generously (conftest.BOUND); how long things took is
printed, never asserted.
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
from ticker.infra.kite.rest import KiteApi, KiteHttp
from ticker.infra.kitesim.market import model_vol
from ticker.infra.queue.control import publish_control
from ticker.infra.stores.accounts import account_store

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
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens))
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
        await wait_for(lambda: rec.tokens(snames.options))
        http = KiteHttp(market.url, timeout=5)
        try:
            order_id = await _any_order(http, acc, sdb)
        finally:
            await http.close()
        await wait_for(lambda: any(d.get("order_id") == order_id for _, ch, d in rec.messages if ch == snames.orders))
    doc = next(d for _, ch, d in rec.messages if ch == snames.orders and d.get("order_id") == order_id)
    assert doc["account_id"] in ("acc1", "acc2")


async def _any_order(http: KiteHttp, acc, sdb) -> str:
    symbol = await sdb.fetchval("SELECT tradingsymbol FROM instruments WHERE instrument_type = 'FUT' LIMIT 1")
    lot = await sdb.fetchval("SELECT lot_size FROM instruments WHERE tradingsymbol = $1", symbol)
    placed = await KiteApi(http, acc.api_key, acc.access_token).place_order("regular", {
        "exchange": "NFO", "tradingsymbol": symbol, "transaction_type": "BUY", "quantity": lot,
        "product": "NRML", "order_type": "MARKET", "market_protection": -1})
    return placed.order_id


async def test_dropped_connections_come_back(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 60)
    await subscribe(sdb, tokens)
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens))
        connects = _connects(streamer)
        assert market.state.drop() >= 2
        took = await wait_for(lambda: _connects(streamer) >= connects + 2)  # both accounts reconnected
        await wait_for(lambda: _sim_subscribed(market) >= set(tokens))  # ... and resubscribed everything
        since = time.time()
        await wait_for(lambda: rec.tokens(snames.options, since=since) >= set(tokens))
    print(f"both sockets reconnected {took:.2f} s after the drop")


async def test_stalled_connection_is_caught_and_replaced(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 20)
    await subscribe(sdb, tokens)
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens))
        before = _stalls(streamer)
        assert market.state.stall(api_key=market.accounts[0].api_key) == 1
        connects = _connects(streamer)
        took = await wait_for(lambda: _stalls(streamer) > before)
        await wait_for(lambda: _connects(streamer) > connects)
        since = time.time()
        await wait_for(lambda: rec.tokens(snames.options, since=since) >= set(tokens))
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
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens))
        assert streamer.health()[1]["accounts"]["acc2"]["tokens"] > 0
        market.state.expire_tokens(api_key=sick.api_key)
        await wait_for(lambda: streamer.health()[1]["accounts"]["acc2"]["token_state"] == "invalid")
        await wait_for(lambda: streamer.health()[1]["accounts"]["acc1"]["tokens"] == len(tokens) + 1)
        moved_at = time.time()
        await wait_for(lambda: rec.tokens(snames.options, since=moved_at) >= set(tokens))
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
        await store.set_token("acc2", session.access_token, "valid")
        await publish_control(sredis, snames, ControlMessage(kind="tokens", account_id="acc2", reason="renewed"))
        await wait_for(lambda: streamer.health()[1]["accounts"]["acc2"]["connected"] > 0)
        health = streamer.health()[1]["accounts"]
    assert health["acc2"]["token_state"] == "valid" and health["acc2"]["tokens"] > 0
    assert health["acc1"]["tokens"] + health["acc2"]["tokens"] == len(tokens) + 1  # + the NIFTY index


async def test_control_channel_adds_and_removes_without_touching_connections(market, sdb, ssettings, snames,
                                                                              sredis):
    tokens = await option_tokens(sdb, 30)
    await subscribe(sdb, tokens[:20])
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings) as streamer:
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens[:20]))
        connects = _connects(streamer)
        await subscribe(sdb, tokens[20:])
        sent = time.time()
        await publish_control(sredis, snames, ControlMessage(kind="subscriptions", tokens=tokens[20:]))
        added = await wait_for(lambda: rec.tokens(snames.options, since=sent) >= set(tokens[20:]))
        await sdb.execute("UPDATE subscriptions SET status = 'inactive' WHERE instrument_token = ANY($1::bigint[])",
                          tokens[:10])
        await publish_control(sredis, snames, ControlMessage(kind="subscriptions", tokens=tokens[:10]))
        removed = await wait_for(lambda: not set(tokens[:10]) & _sim_subscribed(market))
        # Frames the stand-in built before the unsubscribe may still be on their way; once every
        # kept token has ticked twice after the last removed tick, none is left, and from then on
        # a removed token must never be seen again.
        gone = set(tokens[:10])
        await wait_for(lambda: _rounds_since_last(rec, snames.options, gone, set(tokens[10:])) >= 2)
        last = _last_index(rec, snames.options, gone)
        mark = len(rec.messages)
        await wait_for(lambda: _tokens_after(rec, snames.options, mark) >= set(tokens[10:]))
        assert _last_index(rec, snames.options, gone) == last
        pools = streamer.reconciler.pools
        assert sum(len(p.tokens) for p in pools.values()) == 21
        assert _connects(streamer) == connects  # no connection was dropped or reopened
    print(f"control: added in {added:.2f} s, removed in {removed:.2f} s")


def _connects(streamer) -> int:
    return sum(c.connects for p in streamer.reconciler.pools.values() for c in p.conns.values())


def _channel(rec: Recorder, channel: str) -> list[tuple[int, set[int]]]:
    return [(i, {t["instrument_token"] for t in doc}) for i, (_, ch, doc) in enumerate(rec.messages)
            if ch == channel and isinstance(doc, list)]


def _last_index(rec: Recorder, channel: str, tokens: set[int]) -> int:
    """Index of the last message carrying any of `tokens` (-1 if none)."""
    return max((i for i, seen in _channel(rec, channel) if seen & tokens), default=-1)


def _tokens_after(rec: Recorder, channel: str, index: int) -> set[int]:
    return {t for i, seen in _channel(rec, channel) if i >= index for t in seen}


def _rounds_since_last(rec: Recorder, channel: str, gone: set[int], kept: set[int]) -> int:
    """How many times every kept token has ticked after the last message with a removed one."""
    last = _last_index(rec, channel, gone)
    counts = dict.fromkeys(kept, 0)
    for i, seen in _channel(rec, channel):
        if i > last:
            for t in seen & kept:
                counts[t] += 1
    return min(counts.values())


def _sim_subscribed(sim) -> set[int]:
    return {t for conn in sim.state.connections() for t in conn.subs}


async def test_modes_per_token_and_a_mode_change_over_control(market, sdb, ssettings, snames, sredis):
    tokens = await option_tokens(sdb, 6)
    await subscribe(sdb, tokens[:2], "LTP")
    await subscribe(sdb, tokens[2:4], "QUOTE")
    await subscribe(sdb, tokens[4:], "FULL")
    async with Recorder(sredis, [snames.options]) as rec, running_streamer(ssettings):
        await wait_for(lambda: rec.tokens(snames.options) >= set(tokens))
        latest = {t["instrument_token"]: t for t in rec.ticks(snames.options)}
        await sdb.execute("UPDATE subscriptions SET requested_mode = 'FULL' WHERE instrument_token = $1", tokens[0])
        changed = time.time()
        await publish_control(sredis, snames, ControlMessage(kind="subscriptions", tokens=tokens[:1]))
        await wait_for(lambda: any(t["instrument_token"] == tokens[0] and t["depth"]
                                   for t in rec.ticks(snames.options, since=changed)))
    ltp, quote, full = latest[tokens[0]], latest[tokens[2]], latest[tokens[4]]
    assert ltp["volume"] is None and ltp["depth"] is None and ltp["last_price"] > 0 and ltp["iv"] is not None
    assert quote["volume"] is not None and quote["depth"] is None and quote["bid"] is None
    assert full["depth"] is not None and full["oi"] is not None and full["exchange_timestamp"]
