"""`/ws/ticks` resumes from history: `since` replays what a client missed, a gap is told with the
latest ticks (or the whole chain), and order updates outlive a web restart.

Messages are published through the streamer's own sequencing script (`publish_sequenced`, the one
the publisher packs by hand), so envelopes, offsets and history are exactly what production writes.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from tests.web.conftest import API_KEY
from ticker.core.contracts import Names
from ticker.core.tick_envelope import StreamPosition
from ticker.http.state import SERVICES
from ticker.http.ws import hub as hub_module
from ticker.http.ws.history_replay import covered
from ticker.http.ws.hub import TICKS, Stamped, TickQueue, WsClient, stamped, stamped_run, stamped_ticks
from ticker.infra.stores import tick_history
from ticker.infra.stores.tick_history import publish_sequenced

KEYED = {"X-API-Key": API_KEY}


async def receive(ws, kind: str, timeout: float = 30.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive_json()
            if message["type"] == kind:
                return message


async def started(make_api, prefix: str):
    api = await make_api(api_key=API_KEY, publish_channel_prefix=prefix)
    assert await api.app[SERVICES].hub.wait_ready(30)
    ws = await api.ws_connect("/ws/ticks?batch=true", headers=KEYED)
    await receive(ws, "connected")
    return api, ws


def channel_names(api) -> Names:
    return api.app[SERVICES].names


async def publish(redis, names: Names, channel: str, items: list[dict]) -> None:
    await publish_sequenced(redis, names, channel, [orjson.dumps(i) for i in items], envelope=True, history_seconds=300)


async def ticks_until(ws, price: float) -> list[dict]:
    """Every tick received up to the one with `price` (batch frames), each frame's offset checked."""
    got: list[dict] = []
    async with asyncio.timeout(30):
        while not got or got[-1]["last_price"] != price:
            frame = await ws.receive_json()
            if frame["type"] == "ticks":
                assert frame["offset"] and frame["epoch"]
                got += frame["data"]
    return got


async def test_a_resumed_subscription_gets_what_it_missed_once(make_api, redis) -> None:
    api, ws = await started(make_api, f"ticker:r{uuid.uuid4().hex[:8]}")
    names = channel_names(api)
    await ws.send_json({"action": "subscribe", "tokens": [11, 12]})
    await receive(ws, "subscribed")
    await publish(redis, names, names.options, [{"instrument_token": 11, "last_price": 1.0}])
    first = await receive(ws, "ticks")
    since = {"offset": first["offset"], "epoch": first["epoch"]}
    await ws.close()
    missed = [[{"instrument_token": 11, "last_price": 2.0 + i}, {"instrument_token": 99, "last_price": 0.0},
               {"instrument_token": 12, "last_price": 50.0 + i}] for i in range(5)]
    for i, batch in enumerate(missed):
        await publish(redis, names, names.underlying if i % 2 else names.options, batch)

    ws = await api.ws_connect("/ws/ticks?batch=true", headers=KEYED)
    await receive(ws, "connected")
    await ws.send_json({"action": "subscribe", "tokens": [11, 12], "since": since})
    await receive(ws, "subscribed")
    await publish(redis, names, names.options, [{"instrument_token": 12, "last_price": 99.0}])  # live again
    got = await ticks_until(ws, 99.0)
    expected = [t for batch in missed for t in batch if t["instrument_token"] != 99]
    assert got == [*expected, {"instrument_token": 12, "last_price": 99.0}]
    await ws.close()


async def test_a_replay_many_pages_long_arrives_whole_and_in_order(make_api, redis, monkeypatch) -> None:
    """History is read a page at a time, the next page while this one is sent; pages of one
    entry make every step of that a page boundary."""
    monkeypatch.setattr(tick_history, "PAGE_BYTES", 1)
    api, ws = await started(make_api, f"ticker:r{uuid.uuid4().hex[:8]}")
    names = channel_names(api)
    await publish(redis, names, names.options, [{"instrument_token": 5, "last_price": 0.5}])
    offset = (await redis.xrevrange(names.ticks_history, count=1))[0][0].decode()
    since = {"offset": offset, "epoch": (await redis.hget(names.sequence, "epoch")).decode()}
    missed = [[{"instrument_token": 5, "last_price": 1.0 + i}, {"instrument_token": 6, "last_price": 1.0}]
              for i in range(tick_history.FIRST_PAGE * 3)]
    for batch in missed:
        await publish(redis, names, names.options, batch)
    await ws.send_json({"action": "subscribe", "tokens": [5], "since": since})
    got = await ticks_until(ws, missed[-1][0]["last_price"])
    assert got == [batch[0] for batch in missed]
    await ws.close()


def test_a_replayed_run_is_the_ticks_a_batch_send_would_join() -> None:
    """A run holds, byte for byte, what the ticks `stamped_ticks` takes make when a batch send
    joins them; odd items are skipped alike."""
    position = StreamPosition("7-0", "e")
    wanted = {1, 2, 3}
    odd = [{"instrument_token": 1, "last_price": 1e-7, "name": "NIFTY ₹ \"x\"", "depth": {"buy": [{"q": 1}]}},
           {"instrument_token": 4}, {"instrument_token": True}, {"instrument_token": 2.0}, {"last_price": 1},
           [1, 2], "3", None, {"instrument_token": 3, "oi": 10**15}]
    plain = [{"instrument_token": t, "last_price": t / 3} for t in (1, 2, 3, 9)]
    for ticks in (odd, plain, plain[:3]):
        one_by_one = list(stamped_ticks(ticks, position, wanted.__contains__))
        run = stamped_run(ticks, position, wanted)
        assert run is not None and bytes(run) == b",".join(one_by_one)
        assert (run.ticks, run.offset, run.stamp, run.stream) == (len(one_by_one), "7-0", one_by_one[0].stamp, TICKS)
    assert stamped_run(plain, position, {5}) is None and stamped_run([], position, wanted) is None


def test_a_client_queue_is_bounded_in_ticks() -> None:
    queue = TickQueue(maxsize=10)
    run = stamped_run([{"instrument_token": t} for t in range(8)], None, set(range(8)))
    assert run is not None
    queue.put_nowait(run)
    queue.put_nowait(b"{}")
    assert (queue.qsize(), queue.full()) == (9, False)
    queue.put_nowait(b"{}")
    assert queue.full()
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(b"{}")
    assert queue.get_nowait() is run and queue.qsize() == 2


async def test_an_offset_older_than_history_gets_a_gap_and_the_latest_ticks(make_api, redis) -> None:
    api, ws = await started(make_api, f"ticker:r{uuid.uuid4().hex[:8]}")
    names = channel_names(api)
    await publish(redis, names, names.options, [{"instrument_token": 21, "last_price": 3.0}])
    epoch = (await redis.hget(names.sequence, "epoch")).decode()
    await redis.hset(names.latest, "21", orjson.dumps({"instrument_token": 21, "last_price": 3.0}))
    await ws.send_json({"action": "subscribe", "tokens": [21], "since": {"offset": "1-0", "epoch": epoch}})
    await receive(ws, "subscribed")
    gap = await receive(ws, "gap")
    oldest = (await redis.xrange(names.ticks_history, count=1))[0][0].decode()
    assert gap == {"type": "gap", "stream": "ticks", "from": "1-0", "to": oldest, "epoch": epoch, "reason": "trimmed"}
    snapshot = await receive(ws, "ticks")
    assert snapshot["data"] == [{"instrument_token": 21, "last_price": 3.0}] and "offset" not in snapshot

    await ws.send_json({"action": "unsubscribe", "tokens": [21]})
    await receive(ws, "unsubscribed")
    await ws.send_json({"action": "subscribe", "tokens": [21], "since": {"offset": oldest, "epoch": "old"}})
    assert (await receive(ws, "gap"))["reason"] == "epoch_changed"
    await ws.close()


async def test_order_updates_survive_a_web_restart(make_api, redis) -> None:
    prefix = f"ticker:r{uuid.uuid4().hex[:8]}"
    api, ws = await started(make_api, prefix)
    names = channel_names(api)
    await ws.send_json({"action": "subscribe_orders"})
    await receive(ws, "orders_subscribed")
    await publish(redis, names, names.orders, [{"order_id": "1", "status": "OPEN"}])
    first = await receive(ws, "orders")
    assert first["data"] == [{"order_id": "1", "status": "OPEN"}]
    await api.close()  # the web goes away with the client's socket; updates keep coming

    later = [{"order_id": "1", "status": "COMPLETE"}, {"order_id": "2", "status": "REJECTED"}]
    for update in later:
        await publish(redis, names, names.orders, [update])
    api, ws = await started(make_api, prefix)
    await ws.send_json({"action": "subscribe_orders", "since": {"offset": first["offset"], "epoch": first["epoch"]}})
    await receive(ws, "orders_subscribed")
    resumed = [(await receive(ws, "orders"))["data"] for _ in later]
    assert resumed == [[u] for u in later]
    await publish(redis, names, names.orders, [{"order_id": "3", "status": "OPEN"}])
    assert (await receive(ws, "orders"))["data"] == [{"order_id": "3", "status": "OPEN"}]  # live, nothing twice
    await ws.close()


async def test_every_tick_frame_carries_its_message_offset(make_api, redis) -> None:
    """Without ?batch=true each tick is its own frame, stamped with the offset of the message it
    came from; resuming from one of them replays the later messages only."""
    api = await make_api(api_key=API_KEY, publish_channel_prefix=f"ticker:r{uuid.uuid4().hex[:8]}")
    assert await api.app[SERVICES].hub.wait_ready(30)
    names = channel_names(api)
    ws = await api.ws_connect("/ws/ticks", headers=KEYED)
    await receive(ws, "connected")
    await ws.send_json({"action": "subscribe", "tokens": [31, 32]})
    await receive(ws, "subscribed")
    await publish(redis, names, names.options, [{"instrument_token": 31, "last_price": 1.0},
                                                 {"instrument_token": 32, "last_price": 2.0}])
    await publish(redis, names, names.options, [{"instrument_token": 32, "last_price": 3.0}])
    frames = [await receive(ws, "tick") for _ in range(3)]
    history = [i.decode() for i, _ in await redis.xrange(names.ticks_history)]
    assert [f["offset"] for f in frames] == [history[0], history[0], history[1]]
    assert len({f["epoch"] for f in frames}) == 1
    await ws.send_json({"action": "unsubscribe", "tokens": [31, 32]})
    await receive(ws, "unsubscribed")
    await ws.send_json({"action": "subscribe", "tokens": [31, 32],
                        "since": {"offset": frames[1]["offset"], "epoch": frames[1]["epoch"]}})
    await receive(ws, "subscribed")
    assert (await receive(ws, "tick"))["data"] == {"instrument_token": 32, "last_price": 3.0}
    await ws.send_json({"action": "subscribe", "tokens": [33], "since": {"offset": "soon", "epoch": "x"}})
    assert "since" in (await receive(ws, "error"))["message"]
    await ws.close()


async def test_without_history_a_resume_is_a_gap_with_the_latest_ticks(make_api, redis) -> None:
    """TICK_MESSAGE_FORMAT=array: bare arrays, nothing kept to replay."""
    prefix = f"ticker:r{uuid.uuid4().hex[:8]}"
    api = await make_api(api_key=API_KEY, publish_channel_prefix=prefix, tick_message_format="array")
    assert await api.app[SERVICES].hub.wait_ready(30)
    names = channel_names(api)
    await redis.hset(names.latest, "41", orjson.dumps({"instrument_token": 41, "last_price": 4.0}))
    ws = await api.ws_connect("/ws/ticks", headers=KEYED)
    await receive(ws, "connected")
    await ws.send_json({"action": "subscribe", "tokens": [41], "since": {"offset": "5-0", "epoch": "e"}})
    gap = await receive(ws, "gap")
    assert (gap["reason"], gap["from"], gap["to"]) == ("history_off", "5-0", None)
    assert (await receive(ws, "tick")) == {"type": "tick", "data": {"instrument_token": 41, "last_price": 4.0}}
    await redis.publish(names.options, orjson.dumps([{"instrument_token": 41, "last_price": 5.0}]))
    assert (await receive(ws, "tick")) == {"type": "tick", "data": {"instrument_token": 41, "last_price": 5.0}}
    await ws.close()


def test_live_messages_held_during_a_replay_are_bounded_and_deduplicated() -> None:
    """While a replay runs a client's live messages wait aside, up to HELD_MAX_FACTOR queues' worth;
    on release those the replay covered are dropped, and an overflow is reported."""
    client = WsClient(queue_max=2)
    client.hold()
    messages = [stamped(b"{}", Stamped, TICKS, StreamPosition(f"{i}-0", "e"), b"", 7) for i in range(1, 11)]
    assert [client.offer(m) for m in messages] == [True] * 8 + [False] * 2
    assert not client.release(covered(TICKS, "6-0"))  # 1-0 .. 6-0 were replayed; 9-0 and 10-0 were lost
    assert [client.queue.get_nowait().offset for _ in range(client.queue.qsize())] == ["7-0", "8-0"]
    client.hold()
    assert client.offer(messages[0]) and client.release(covered(TICKS, "0-1"))
    assert client.queue.get_nowait() is messages[0]


async def test_a_connected_client_misses_nothing_while_the_hub_resubscribes(make_api, redis, monkeypatch,
                                                                            caplog) -> None:
    """The hub's own pub/sub connection is cut (a reset, a Redis restarted with its data): once it
    has subscribed again it routes from history what was published meanwhile, and then live, so a
    client that stayed connected gets every message once."""
    monkeypatch.setattr(hub_module, "RECONNECT_MIN", 1.0)  # a wide window to publish into while it is away
    api, ws = await started(make_api, f"t{uuid.uuid4().hex[:8]}:nifty")
    names, hub = channel_names(api), api.app[SERVICES].hub
    await ws.send_json({"action": "subscribe", "tokens": [7]})
    await receive(ws, "subscribed")
    for price in (1.0, 2.0):
        await publish(redis, names, names.options, [{"instrument_token": 7, "last_price": price}])
    assert [t["last_price"] for t in await ticks_until(ws, 2.0)] == [1.0, 2.0]

    caplog.set_level("INFO", logger="ticker.http.ws")
    killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed >= 1
    for price in (3.0, 4.0, 5.0):  # while the hub waits to subscribe again
        await publish(redis, names, names.options, [{"instrument_token": 7, "last_price": price}])
    assert await hub.wait_ready(30)
    await publish(redis, names, names.options, [{"instrument_token": 7, "last_price": 6.0}])
    assert [t["last_price"] for t in await ticks_until(ws, 6.0)] == [3.0, 4.0, 5.0, 6.0]
    assert "filled in 3 messages of ticks" in caplog.text
    await ws.close()
