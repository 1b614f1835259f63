"""A feed from the web's `/ws/ticks` (`http/ws/ticks_socket.py`), for code that cannot reach Redis.

Each connection subscribes with `"since"`: the position of the last message received on each
stream, so the server replays what was missed, with nothing twice (frames at or below a known
offset are dropped here too); a `gap` message becomes a `StreamGap`, and the offset-less frames
the server sends in its stead (the latest ticks, the whole chain) a `Snapshot`. Ticks come in
batch frames (`?batch=true`), which always end on a whole message, so an offset covers its frame.
A closed or failed connection is made again with capped, jittered back-off; a refused one
(401/403) raises `PermissionError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp
import orjson

from ticker.client.feed_events import (
    CHAIN_STREAM,
    ORDER_STREAM,
    TICK_STREAM,
    FeedEvent,
    Snapshot,
    StreamGap,
    delivered,
    published,
    stream_kind,
)
from ticker.core.backoff import jittered
from ticker.core.tick_envelope import StreamPosition

log = logging.getLogger("ticker.client")

PATH = "/ws/ticks?batch=true"
FRAMES = {"ticks": TICK_STREAM, "orders": ORDER_STREAM, "chain": CHAIN_STREAM}  # frame type -> stream


class WsFeed:
    """`async for event in WsFeed("http://host:8000", api_key=..., tokens=[...]):` ticks of
    `tokens`, and with `orders=True` order updates, with `chain=("NIFTY", "YYYY-MM-DD" or None)`
    that chain's messages. Authentication: `api_key` (the `X-API-Key` header) or `token`, a JWT
    from `POST /auth/token` or an async callable that fetches a fresh one for each connection.
    `url` may also be a callable, read at each connection."""

    def __init__(self, url: str | Callable[[], str], *, api_key: str | None = None,
                 token: str | Callable[[], Awaitable[str]] | None = None, tokens: Iterable[int] = (),
                 orders: bool = False, chain: tuple[str, str | None] | None = None,
                 since: Mapping[str, StreamPosition] | None = None,
                 backoff: tuple[float, float] = (0.2, 10.0)) -> None:
        self.url, self.api_key, self.token, self.backoff = url, api_key, token, backoff
        self.tokens = list(dict.fromkeys(tokens))
        self.orders, self.chain = orders, chain
        self.positions: dict[str, StreamPosition] = dict(since or {})
        self.reconnects = 0  # connections lost and made again
        if not (self.tokens or orders or chain):
            raise ValueError("follow at least one of tokens, orders and a chain")

    def __aiter__(self) -> AsyncIterator[FeedEvent]:
        return self.events()

    async def events(self) -> AsyncIterator[FeedEvent]:
        attempt = 0
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    url, headers = await self._address()
                    async with http.ws_connect(url, headers=headers, heartbeat=30.0) as ws:
                        await self._subscribe(ws)
                        async for message in ws:
                            if message.type != aiohttp.WSMsgType.TEXT:
                                break  # closed or failed: connect again
                            attempt = 0
                            for event in self._events(orjson.loads(message.data)):
                                yield event
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status in (401, 403):
                        raise PermissionError(f"/ws/ticks refused the credentials ({exc.status})") from exc
                    log.warning("ticker.client: /ws/ticks refused the connection (%s); retrying", exc.status)
                except (aiohttp.ClientError, OSError) as exc:
                    log.warning("ticker.client: /ws/ticks connection lost (%s); resuming", exc)
                await asyncio.sleep(jittered(attempt, *self.backoff))
                attempt += 1
                self.reconnects += 1

    async def _address(self) -> tuple[str, dict[str, str]]:
        base = (self.url() if callable(self.url) else self.url).rstrip("/")
        if self.token is None:
            return base + PATH, {"X-API-Key": self.api_key} if self.api_key else {}
        token = self.token if isinstance(self.token, str) else await self.token()
        return base + PATH, {"Authorization": f"Bearer {token}"}

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Ask for every stream, from the feed's positions. The server answers in order, so the
        ticks' first frame (their snapshot) also says the order and chain subscriptions hold."""
        commands: list[tuple[str, dict[str, Any]]] = []
        if self.orders:
            commands.append((ORDER_STREAM, {"action": "subscribe_orders"}))
        if self.chain is not None:
            underlying, expiry = self.chain
            commands.append((CHAIN_STREAM, {"action": "subscribe_chain", "underlying": underlying,
                                            **({"expiry": expiry} if expiry else {})}))
        if self.tokens:
            commands.append((TICK_STREAM, {"action": "subscribe", "tokens": self.tokens}))
        for kind, command in commands:
            since = [{"offset": p.offset, "epoch": p.epoch, **({"stream": stream} if ":" in stream else {})}
                     for stream, p in self.positions.items() if stream_kind(stream) == kind]
            if since:  # on a sharded tick bus one per shard's stream, each named
                command["since"] = since if len(since) > 1 else since[0]
            await ws.send_str(orjson.dumps(command).decode())

    def _events(self, frame: dict[str, Any]) -> list[FeedEvent]:
        kind = frame.get("type")
        if kind == "gap":
            return [StreamGap(frame.get("stream", ""), frame.get("from"), frame.get("to"),
                              frame.get("reason", ""), frame.get("epoch"))]
        if kind == "error":
            log.warning("ticker.client: /ws/ticks says: %s", frame.get("message"))
            return []
        stream = FRAMES.get(str(kind))
        if stream is None:
            return []  # connected, subscribed, pong and the like
        data = frame.get("data")
        items = [i for i in (data if isinstance(data, list) else [data]) if isinstance(i, dict)]
        offset, epoch = frame.get("offset"), frame.get("epoch")
        if not (isinstance(offset, str) and isinstance(epoch, str)):
            # Under envelopes only the server's stand-ins lack an offset: the latest ticks or the
            # whole chain, that start a subscription or follow a gap. (With bare arrays every
            # frame lacks one, and comes as a Snapshot.)
            return [Snapshot(stream, items)]
        named = frame.get("stream")  # a shard's stream on a sharded tick bus (`ticks:NIFTY`)
        if isinstance(named, str) and stream_kind(named) == stream:
            stream = named
        position = StreamPosition(offset, epoch)
        if delivered(self.positions.get(stream), position):
            return []
        self.positions[stream] = position
        return [published(stream, items, offset, epoch)]

