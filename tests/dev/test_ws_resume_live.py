"""A `/ws/ticks` client of the running system (`ticker dev`: the stand-in's market, the real
streamer and web) goes away while ticks flow and resumes with every tick it missed, none twice.

What it should have received is taken from an independent Redis subscriber of the same channels
that never disconnects (the stand-in counts what it sends but keeps no per-tick record): every tick
of the chosen tokens in the envelopes published after the client's starting offset, up to the
offset of the last frame the client got, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
import orjson
from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.core.tick_envelope import offset_order, unwrap
from ticker.infra.stores.redis import connect

NAMES = Names("ticker:nifty")  # what `ticker dev` publishes on
BOUND = 120.0  # a busy two-core machine is slow, not wrong
MISSED_MESSAGES = 10  # messages with the client's tokens published while it is away


class Subscriber:
    """Every envelope on the tick channels, in the order Redis delivered them."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.envelopes: list[dict] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(NAMES.options, NAMES.underlying)
        self.ready.set()
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    self.envelopes.append(orjson.loads(message["data"]))
        finally:
            await pubsub.aclose()

    def ticks(self, tokens: set[int], after: str, upto: str) -> list[dict]:
        low, high = offset_order(after), offset_order(upto)
        return [t for e in self.envelopes if low < offset_order(e["offset"]) <= high
                for t in unwrap(e)[0] if t.get("instrument_token") in tokens]

    def messages_after(self, tokens: set[int], after: str) -> int:
        low = offset_order(after)
        return sum(1 for e in self.envelopes if offset_order(e["offset"]) > low
                   and any(t.get("instrument_token") in tokens for t in e["ticks"]))


async def until(predicate, what: str) -> None:
    async with asyncio.timeout(BOUND):
        while not predicate():
            await asyncio.sleep(0.05)
    assert predicate(), what


async def session(http: aiohttp.ClientSession, url: str, tokens: set[int], since: dict,
                  enough: Callable[[int, dict], bool]) -> tuple[list[dict], dict]:
    """Subscribe from `since` and read `ticks` frames until `enough(frames, last position)`; the
    ticks and the last frame's position."""
    got: list[dict] = []
    frames = 0
    last = since
    async with http.ws_connect(url) as ws, asyncio.timeout(BOUND):
        assert (await ws.receive_json())["type"] == "connected"
        await ws.send_json({"action": "subscribe", "tokens": sorted(tokens), "since": since})
        while not enough(frames, last):
            frame = await ws.receive_json()
            assert frame["type"] in ("subscribed", "ticks"), frame  # no gap, no snapshot
            if frame["type"] == "ticks":
                frames += 1
                got += frame["data"]
                last = {"offset": frame["offset"], "epoch": frame["epoch"]}
    return got, last


async def test_a_client_away_while_ticks_flow_resumes_with_every_tick_once(ticker_dev) -> None:
    redis = connect(ticker_dev.info["redis_url"])
    subscriber = Subscriber(redis)
    task = asyncio.create_task(subscriber.run())
    url = ticker_dev.web_url.replace("http", "ws", 1) + "/ws/ticks?batch=true"
    try:
        await subscriber.ready.wait()
        await until(lambda: any(e["ticks"] for e in subscriber.envelopes if "ticks" in e), "no ticks published")
        first = next(e for e in subscriber.envelopes if e.get("ticks"))
        tokens = {t["instrument_token"] for t in first["ticks"][:10]}
        start = {"offset": first["offset"], "epoch": first["epoch"]}
        async with aiohttp.ClientSession(headers={"X-API-Key": ticker_dev.api_key}) as http:
            before, away = await session(http, url, tokens, start, lambda frames, _: frames >= 3)
            await until(lambda: subscriber.messages_after(tokens, away["offset"]) >= MISSED_MESSAGES,
                        "no ticks for the tokens while the client was away")
            target = subscriber.envelopes[-1]["offset"]
            after, end = await session(http, url, tokens, away,
                                       lambda _, last: offset_order(last["offset"]) >= offset_order(target))
        await until(lambda: offset_order(subscriber.envelopes[-1]["offset"]) >= offset_order(end["offset"]),
                    "the independent subscriber fell behind")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()
    expected = subscriber.ticks(tokens, start["offset"], end["offset"])
    assert len(after) >= MISSED_MESSAGES and before + after == expected
