"""`POST /_sim/ws/inject`: exact bytes as binary frames on every open ticker connection, seen by
real WebSocket clients; bad input is refused with a clear 400."""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import pytest

from ticker.core.wire import decode

WAIT = 30.0  # generous bound on waiting for frames that must arrive
# A frame that decode refuses: two packets declared, the second is a 28-byte index packet cut short.
BAD = struct.pack(">HH", 2, 8) + struct.pack(">II", 408065, 150025) + struct.pack(">H", 28) + b"\x00" * 10


def _url(sim, i: int) -> str:
    acc = sim.accounts[i]
    return f"{sim.ws_url}?api_key={acc.api_key}&access_token={acc.access_token}"


async def _until_connected(sim, n: int) -> None:
    async def wait() -> None:
        while len(sim.state.connections()) < n:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(wait(), WAIT)


async def _frames_equal_to(ws: aiohttp.ClientWebSocketResponse, frame: bytes, count: int) -> int:
    """Read until `count` binary messages equal to `frame` arrived; returns how many other
    binary messages (heartbeats) came meanwhile."""
    seen = others = 0
    while seen < count:
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        if msg.data == frame:
            seen += 1
        else:
            others += 1
    return others


async def test_inject_sends_the_exact_bytes_on_every_connection(kitesim):
    async with aiohttp.ClientSession() as session:
        first = await session.ws_connect(_url(kitesim, 0))
        second = await session.ws_connect(_url(kitesim, 1))
        await _until_connected(kitesim, 2)
        async with session.post(f"{kitesim.url}/_sim/ws/inject",
                                json={"frame_hex": BAD.hex(), "times": 3, "interval_ms": 20}) as r:
            assert r.status == 200
            doc = await r.json()
        assert doc == {"connections": 2, "frames_sent": 6, "times": 3, "interval_ms": 20.0, "bytes": len(BAD)}
        await asyncio.gather(_frames_equal_to(first, BAD, 3), _frames_equal_to(second, BAD, 3))
        async with session.get(f"{kitesim.url}/_sim/counters") as r:
            assert (await r.json())["frames_injected"] == 6
        with pytest.raises(ValueError):
            decode(BAD)  # it really is a bad frame
        await first.close()
        await second.close()


async def test_inject_defaults_to_one_frame_and_skips_a_stalled_connection(kitesim):
    async with aiohttp.ClientSession() as session:
        live = await session.ws_connect(_url(kitesim, 0))
        stalled = await session.ws_connect(_url(kitesim, 1))
        await _until_connected(kitesim, 2)
        assert kitesim.state.stall(api_key=kitesim.accounts[1].api_key) == 1
        async with session.post(f"{kitesim.url}/_sim/ws/inject", json={"frame_hex": "DE AD be ef"}) as r:
            doc = await r.json()
        assert r.status == 200 and (doc["connections"], doc["frames_sent"], doc["times"]) == (1, 1, 1)
        await _frames_equal_to(live, bytes.fromhex("deadbeef"), 1)
        await live.close()
        await stalled.close()


@pytest.mark.parametrize(("body", "field"), [
    ({"frame_hex": "zz"}, "frame_hex"),
    ({"frame_hex": "abc"}, "frame_hex"),
    ({"frame_hex": ""}, "frame_hex"),
    ({"frame_hex": "   "}, "frame_hex"),
    ({}, "frame_hex"),
    ({"frame_hex": 5}, "frame_hex"),
    ({"frame_hex": "00", "times": 0}, "times"),
    ({"frame_hex": "00", "times": 10_001}, "times"),
    ({"frame_hex": "00", "times": "3"}, "times"),
    ({"frame_hex": "00", "times": True}, "times"),
    ({"frame_hex": "00", "interval_ms": -1}, "interval_ms"),
    ({"frame_hex": "00", "interval_ms": 60_001}, "interval_ms"),
    ({"frame_hex": "00", "times": 10_000, "interval_ms": 100}, "interval_ms"),
    ({"frame_hex": "00", "repeat": 2}, "repeat"),
    ({"frame_hex": "00" * (1024 * 1024 + 1)}, "frame_hex"),
])
async def test_bad_input_is_a_400_naming_the_field(kitesim, body, field):
    async with aiohttp.ClientSession() as session, \
            session.post(f"{kitesim.url}/_sim/ws/inject", json=body) as r:
        doc = await r.json()
    assert r.status == 400
    error = doc["error"]
    assert error["code"] == "invalid_request" and error["message"]
    assert field in {d["field"] for d in error["details"]}
    assert kitesim.state.counters.frames_injected == 0


async def test_a_body_that_is_not_json_is_a_400(kitesim):
    async with aiohttp.ClientSession() as session, \
            session.post(f"{kitesim.url}/_sim/ws/inject", data=b"frame=00") as r:
        doc = await r.json()
    assert r.status == 400 and doc["error"]["code"] == "invalid_request"
