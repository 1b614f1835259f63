"""The ticker WebSocket: handshake rules, subscriptions and modes, packets, heartbeats, and the
connection-level fault controls (drop one / all / every N s, stall), tick-rate controls."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import aiohttp
import orjson
import pytest

from tests.waiting import wait_for
from ticker.core.wire import decode
from ticker.infra.kitesim.config import SimConfig
from ticker.infra.kitesim.sim_state import SimState
from ticker.infra.kitesim.universe import KIND_CE
from ticker.infra.kitesim.ws import MODE_FULL, TickerConn

WAIT = 30.0  # upper bound on waiting for something that must arrive


def _url(sim, i: int = 0, token: str | None = None) -> str:
    acc = sim.accounts[i]
    return f"{sim.ws_url}?api_key={acc.api_key}&access_token={token or acc.access_token}"


async def _send(ws, action: str, value) -> None:
    await ws.send_str(orjson.dumps({"a": action, "v": value}).decode())


async def _next(ws, kind=aiohttp.WSMsgType.BINARY, min_len: int = 2):
    """The next message of a kind (binary frames shorter than min_len, i.e. heartbeats, skipped)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return msg
        if msg.type == kind and (kind != aiohttp.WSMsgType.BINARY or len(msg.data) >= min_len):
            return msg


def _options(sim, n: int) -> list[int]:
    return _options_of(sim.state, n)


def _options_of(state: SimState, n: int) -> list[int]:
    uni = state.universe
    return [int(t) for t in uni.token[uni.kind == KIND_CE][:n]]


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_bad_credentials_refused_with_403(kitesim, session):
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await session.ws_connect(_url(kitesim, token="wrong"))
    assert err.value.status == 403
    assert kitesim.state.counters.ws_refused["403"] == 1


async def test_fourth_connection_refused(kitesim, session):
    conns = [await session.ws_connect(_url(kitesim)) for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await session.ws_connect(_url(kitesim))
    assert err.value.status == 429
    other = await session.ws_connect(_url(kitesim, 1))  # the limit is per api_key
    await conns[0].close()

    async def server_noticed_the_close() -> bool:
        return len(kitesim.state.connections(kitesim.account.api_key)) < 3

    await wait_for(server_noticed_the_close, WAIT, every=0.02)
    again = await session.ws_connect(_url(kitesim))
    for ws in (*conns[1:], other, again):
        await ws.close()


async def test_3001st_token_refused_with_error_text(kitesim_factory, session):
    sim = await kitesim_factory(profile="small")
    uni = sim.state.universe
    known = [int(t) for t in uni.token]
    filler = list(range(1, 3000 - len(known)))  # 2999 in all  # unknown tokens count, as on Kite
    async with session.ws_connect(_url(sim)) as ws:
        await _send(ws, "subscribe", known + filler)
        await _send(ws, "subscribe", [999_999_01, 999_999_02])
        msg = await _next(ws, aiohttp.WSMsgType.TEXT)
        body = orjson.loads(msg.data)
        assert body["type"] == "error" and "3000" in body["data"]
        assert len(sim.state.connections()[0].subs) == 3000
        assert sim.state.counters.tokens_refused == 1


async def test_modes_and_packet_lengths(kitesim, session):
    opts = _options(kitesim, 5)
    async with session.ws_connect(_url(kitesim)) as ws:
        await _send(ws, "subscribe", [256265, *opts])
        ticks = decode((await _next(ws)).data)
        lengths = dict(zip(ticks.token.tolist(), ticks.packet_length.tolist(), strict=True))
        assert lengths[256265] == 28 and {lengths[t] for t in opts} == {44}  # quote by default
        await _send(ws, "mode", ["full", [256265, *opts]])
        while True:
            ticks = decode((await _next(ws)).data)
            lengths.update(zip(ticks.token.tolist(), ticks.packet_length.tolist(), strict=True))
            if lengths[256265] == 32 and {lengths[t] for t in opts} == {184}:
                break
        assert (ticks.depth_sell_price[ticks.packet_length == 184] > 0).all()
        await _send(ws, "mode", ["ltp", opts])
        while {lengths[t] for t in opts} != {8}:
            ticks = decode((await _next(ws)).data)
            lengths.update(zip(ticks.token.tolist(), ticks.packet_length.tolist(), strict=True))
        await _send(ws, "unsubscribe", opts)
        conn = kitesim.state.connections()[0]

        async def only_the_index_left() -> bool:
            return conn.tokens.tolist() == [256265]

        await wait_for(only_the_index_left, WAIT, every=0.01)


async def test_bad_messages_get_error_text(kitesim, session):
    async with session.ws_connect(_url(kitesim)) as ws:
        for bad in ("not json", '{"a": "subscribe", "v": ["x"]}', '{"a": "mode", "v": ["turbo", [1]]}',
                    '{"a": "dance", "v": []}'):
            await ws.send_str(bad)
            body = orjson.loads((await _next(ws, aiohttp.WSMsgType.TEXT)).data)
            assert body["type"] == "error"
        assert not ws.closed


async def test_heartbeat_when_idle(kitesim_factory, session):
    sim = await kitesim_factory(heartbeat_seconds=0.1)
    async with session.ws_connect(_url(sim)) as ws:
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert msg.type == aiohttp.WSMsgType.BINARY and msg.data == b"\x00"


async def test_drop_one_and_all(kitesim, session):
    a = await session.ws_connect(_url(kitesim))
    b = await session.ws_connect(_url(kitesim, 1))
    await _wait_conns(kitesim, 2)
    first = min(c.id for c in kitesim.state.connections())
    assert kitesim.state.drop(connection_id=first) == 1
    assert (await _next(a)).type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
    assert not b.closed
    assert kitesim.state.drop() == 1
    assert (await _next(b)).type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)


async def test_drop_every_n_seconds(kitesim, session):
    kitesim.state.drop_every(0.2)
    for _ in range(2):  # dropped, reconnect, dropped again
        ws = await session.ws_connect(_url(kitesim))
        msg = await _next(ws)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
        await ws.close()
    kitesim.state.drop_every(None)
    assert kitesim.state.engine.drop_every is None


async def test_stall_goes_silent_while_others_tick(kitesim, session):
    opts = _options(kitesim, 3)
    async with session.ws_connect(_url(kitesim)) as quiet, session.ws_connect(_url(kitesim, 1)) as loud:
        for ws in (quiet, loud):
            await _send(ws, "subscribe", opts)
            await _next(ws)
        conn = kitesim.state.connections(kitesim.account.api_key)[0]
        assert kitesim.state.stall(connection_id=conn.id) == 1
        with contextlib.suppress(asyncio.TimeoutError):  # drain what was already in flight
            while True:
                await asyncio.wait_for(quiet.receive(), 0.3)
        received = 0
        for _ in range(5):
            await _next(loud)
            received += 1
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(quiet.receive(), 0.3)
        assert received == 5 and not quiet.closed
        kitesim.state.stall(connection_id=conn.id, stalled=False)
        assert (await _next(quiet)).type == aiohttp.WSMsgType.BINARY


def test_tick_rates_per_token_and_total_target():
    # The engine is stepped by hand, 1/16 s at a time (exact in binary): what ticks follows from the
    # rates alone, not from how promptly a busy machine runs the stand-in's clock. Aligned phases:
    # every frame is built at its step (staggered ones are built at their phase, between steps).
    state = SimState(SimConfig(seed=7, tick_interval_ms=50, tick_phases="aligned"))
    conn = TickerConn("sim_api_key", None, None, state.universe, 3000)  # a client that takes every frame
    state.hub.conns[conn.id] = conn
    sent: list[list[int]] = []
    state.engine.tap = lambda _conn, ticks, _frame: sent.append(ticks.token.tolist())
    clock = float(int(time.monotonic()) + 1)
    state.engine.step(time.time(), clock)  # the engine's clock starts here

    def ticks_in(steps: int) -> Counter:
        nonlocal clock
        sent.clear()
        for _ in range(steps):
            clock += 1 / 16
            state.engine.step(time.time(), clock)
            conn.frames.clear()
        return Counter(t for frame in sent for t in frame)

    uni = state.universe
    opts = [int(t) for t in uni.token[uni.kind == KIND_CE][:100]]
    fast, slow = opts[0], opts[1]
    state.set_ticks(per_token={fast: 16.0, slow: 1.0})
    # Ten seconds of steps after each subscription's first tick: a rate of r ticks r*10 times, or
    # once more, depending on the random phase a subscription starts with.
    conn.subscribe([fast, slow])
    assert ticks_in(1) == {fast: 1, slow: 1}  # a new subscription ticks at once
    ticks = ticks_in(160)
    assert ticks[fast] == 160 and ticks[slow] in (10, 11), ticks

    conn.unsubscribe([fast, slow])
    state.set_ticks(clear=True, ticks_per_second=200.0)
    conn.subscribe(opts)
    assert ticks_in(1) == {t: 1 for t in opts}
    ticks = ticks_in(160)  # 200 a second, shared by the 100 subscriptions
    assert set(ticks) == set(opts) and set(ticks.values()) <= {20, 21}, ticks
    assert max(len(frame) for frame in sent) < len(opts)  # spread over the intervals, not in bursts


def test_staggered_phases_send_each_connection_frames_at_its_own_offset():
    # Stepped by hand on a made-up clock: when each frame leaves is the engine's own schedule.
    state = SimState(SimConfig(seed=7, tick_interval_ms=100))
    a, b = (TickerConn("sim_api_key", None, None, state.universe, 3000) for _ in range(2))
    for conn in (a, b):
        state.hub.conns[conn.id] = conn
        conn.subscribe(_options_of(state, 3))
    first, second = sorted((a, b), key=lambda c: c.phase)
    assert 0 < first.phase < second.phase < 1 and state.engine.describe()["tick_phases"] == "staggered"
    built: list[int] = []
    state.engine.tap = lambda conn, _ticks, _frame: built.append(conn.id)
    clock = float(int(time.monotonic()) + 1)
    state.engine.step(time.time(), clock)
    assert not a.frames and not b.frames and len(a.held) == len(b.held) == 1 and not built  # due later
    between = clock + (first.phase + second.phase) / 2 * 0.1
    state.engine.release(between)
    assert len(first.frames) == 1 and not second.frames and built == [first.id]  # the earlier phase, alone
    state.engine.release(clock + second.phase * 0.1)
    assert len(second.frames) == 1 and not first.held and not second.held

    state.set_ticks(phases="aligned")  # the worst case: every connection's frame at the step
    state.engine.step(time.time(), clock + 0.1)
    assert len(a.frames) == len(b.frames) == 2 and not a.held and not b.held
    state.reset()
    assert state.engine.phases == "staggered"


async def test_connections_get_distinct_phases_and_the_admin_api_aligns_them(kitesim, session):
    async with session.ws_connect(_url(kitesim)) as one, session.ws_connect(_url(kitesim)) as two:
        for ws in (one, two):
            await _send(ws, "subscribe", _options(kitesim, 2))
            await _next(ws)
        async with session.get(f"{kitesim.url}/_sim/ws/connections") as r:
            phases = [c["phase"] for c in await r.json()]
        assert len(set(phases)) == 2 and all(0 <= p < 1 for p in phases)
        async with session.post(f"{kitesim.url}/_sim/ticks", json={"tick_phases": "aligned"}) as r:
            assert (await r.json())["tick_phases"] == "aligned"
        for ws in (one, two):
            await _next(ws)  # aligned frames still arrive on both
        async with session.post(f"{kitesim.url}/_sim/ticks", json={"tick_phases": "sideways"}) as r:
            assert r.status == 400


async def _wait_conns(sim, n: int) -> None:
    async def connections_open() -> bool:
        return len(sim.state.connections()) == n

    await wait_for(connections_open, WAIT, every=0.01)


async def test_expired_token_drops_the_socket_and_reconnect_gets_403(kitesim, session):
    ws = await session.ws_connect(_url(kitesim))
    await _wait_conns(kitesim, 1)
    kitesim.state.expire_tokens(kitesim.account.api_key)
    assert (await _next(ws)).type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await session.ws_connect(_url(kitesim))
    assert err.value.status == 403
    await ws.close()


async def test_refused_handshakes_of_a_good_token_over_the_admin_api(kitesim, session):
    ws = await session.ws_connect(_url(kitesim))
    await _wait_conns(kitesim, 1)
    async with session.post(f"{kitesim.url}/_sim/ws/refuse",
                            json={"api_key": kitesim.account.api_key, "times": 2}) as resp:
        assert resp.status == 200 and (await resp.json()) == {"refusing": 1}
    assert (await _next(ws)).type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
    for _ in range(2):
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(_url(kitesim))
        assert err.value.status == 403
    other = await session.ws_connect(_url(kitesim, 1))  # only that api_key was refused
    again = await session.ws_connect(_url(kitesim))  # the same token works again
    assert kitesim.state.counters.ws_refused["403"] == 2
    async with session.post(f"{kitesim.url}/_sim/ws/refuse", json={"api_key": "nope"}) as resp:
        assert resp.status == 404
    await other.close()
    await again.close()
    await ws.close()


async def test_admin_lists_connections_and_subscriptions(kitesim, session):
    opts = _options(kitesim, 7)
    async with session.ws_connect(_url(kitesim)) as ws:
        await _send(ws, "subscribe", opts)
        await _send(ws, "mode", ["full", opts[:2]])
        await _next(ws)

        async def both_commands_applied() -> bool:
            return list(kitesim.state.connections()[0].subs.values()).count(MODE_FULL) == 2

        await wait_for(both_commands_applied, WAIT, every=0.01)
        async with session.get(f"{kitesim.url}/_sim/ws/connections") as r:
            [conn] = await r.json()
        assert conn["api_key"] == kitesim.account.api_key and conn["subscriptions"] == 7
        assert conn["modes"] == {"ltp": 0, "quote": 5, "full": 2}
        async with session.get(f"{kitesim.url}/_sim/state") as r:
            assert (await r.json())["connections_per_api_key"] == {kitesim.account.api_key: 1}
        async with session.post(f"{kitesim.url}/_sim/ws/stall", json={"connection_id": conn["id"]}) as r:
            assert await r.json() == {"stalled": 1}
        async with session.post(f"{kitesim.url}/_sim/ws/drop", json={}) as r:
            assert await r.json() == {"dropped": 1}
        async with session.post(f"{kitesim.url}/_sim/ticks", json={"tick_interval_ms": 20, "tick_rate": 3}) as r:
            assert (await r.json())["tick_rate"] == 3


async def test_a_stalled_socket_closed_by_its_client_frees_its_slot(kitesim, session):
    ws = await session.ws_connect(_url(kitesim))
    await _wait_conns(kitesim, 1)
    assert kitesim.state.stall() == 1
    await ws.close()
    await _wait_conns(kitesim, 0)
