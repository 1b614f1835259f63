"""The ticker WebSocket (`/ws?api_key=&access_token=`), as Kite serves it.

Upgrades are refused with 403 for bad credentials and 429 past `max_connections_per_key` live
connections of one api_key. Clients send `{"a":"subscribe"|"unsubscribe","v":[tokens]}` and
`{"a":"mode","v":[mode,[tokens]]}`; new subscriptions tick in `quote` mode. Each connection gets
one binary frame per tick interval (built by `engine.py`), sent at its own phase within the
interval unless the engine aligns every connection's frames, a 1-byte heartbeat when idle for
`heartbeat_seconds`, and order postbacks as text. Every connection has one writer task, owned
and awaited by its handler; the engine never blocks on a slow client (it skips the client's
frame instead, and counts it). `TickerHub.inject` sends arbitrary bytes (bad frames, for tests)
on every open connection through the same per-connection lock, so they never interleave with
the writer's frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from ticker.infra.kitesim.counters import Counters
from ticker.infra.kitesim.sessions import AuthBook
from ticker.infra.kitesim.universe import Universe

log = logging.getLogger(__name__)

MODE_LTP, MODE_QUOTE, MODE_FULL = 0, 1, 2
MODES = {"ltp": MODE_LTP, "quote": MODE_QUOTE, "full": MODE_FULL}
FRAME_BACKLOG = 4
TEXT_BACKLOG = 1000
_ids = itertools.count(1)


class TickerConn:
    """One client connection: its subscriptions (token -> mode) and its outgoing queue."""

    def __init__(self, api_key: str, ws: web.WebSocketResponse, request: web.Request,
                 uni: Universe, max_tokens: int) -> None:
        self.id = next(_ids)
        self.api_key = api_key
        self.ws = ws
        self.request = request
        self.uni = uni
        self.max_tokens = max_tokens
        self.subs: dict[int, int] = {}
        self.rows = np.empty(0, np.int64)
        self.tokens = np.empty(0, np.int64)
        self.modes = np.empty(0, np.uint8)
        self.acc = np.empty(0, np.float64)  # tick-rate accumulators, one per subscription
        self.frames: deque[bytes] = deque()
        # Frames due at a later moment of the interval (a staggered phase): when (monotonic), and
        # how to build the frame then, so the work of building them is spread over the interval too.
        self.held: deque[tuple[float, Callable[[], bytes]]] = deque()
        self.phase = phase_of(self.id)
        self.texts: deque[str] = deque(maxlen=TEXT_BACKLOG)
        self.wake = asyncio.Event()
        self.unstalled = asyncio.Event()
        self.unstalled.set()
        self.last_sent = time.monotonic()
        self.ticks_sent = 0
        self.connected_at = time.time()
        self._send_lock = asyncio.Lock()  # the writer and `send_raw` take turns on the socket

    @property
    def stalled(self) -> bool:
        return not self.unstalled.is_set()

    def stall(self, on: bool) -> None:
        if on:
            self.unstalled.clear()
        else:
            self.unstalled.set()

    # --- subscriptions ---------------------------------------------------------------------------
    def subscribe(self, tokens: list[int]) -> int:
        """Add tokens; unknown ones never tick but hold a slot, as on Kite. Returns how many
        were refused for want of room."""
        fresh = [t for t in dict.fromkeys(tokens) if t not in self.subs]
        room = max(0, self.max_tokens - len(self.subs))
        for t in fresh[:room]:
            self.subs[t] = MODE_QUOTE
        self._rebuild(new=set(fresh[:room]))
        return max(0, len(fresh) - room)

    def unsubscribe(self, tokens: list[int]) -> None:
        for t in tokens:
            self.subs.pop(t, None)
        self._rebuild(new=set())

    def set_mode(self, mode: int, tokens: list[int]) -> None:
        changed = {t for t in tokens if t in self.subs}
        for t in changed:
            self.subs[t] = mode
        self._rebuild(new=changed)

    def _rebuild(self, new: set[int]) -> None:
        """Columns for the engine; `new` tokens tick at the next interval (a fresh snapshot)."""
        old_acc = dict(zip(self.tokens.tolist(), self.acc.tolist(), strict=True))
        tokens = np.fromiter(self.subs.keys(), np.int64, len(self.subs))
        rows = self.uni.rows_of(tokens)
        known = rows >= 0
        self.tokens, self.rows = tokens[known], rows[known]
        self.modes = np.fromiter((self.subs[t] for t in self.tokens.tolist()), np.uint8, len(self.tokens))
        # New subscriptions start above 1 so they tick at once, and with a random phase after that,
        # so throttled rates spread over intervals instead of arriving in bursts.
        fresh = 1.0 + np.random.default_rng().random(len(self.tokens))
        self.acc = np.array([f if t in new or t not in old_acc else old_acc[t]
                             for t, f in zip(self.tokens.tolist(), fresh.tolist(), strict=True)])

    # --- output ----------------------------------------------------------------------------------
    def can_take_frame(self) -> bool:
        return len(self.frames) + len(self.held) < FRAME_BACKLOG

    def push_frame(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.wake.set()

    def hold_frame(self, build: Callable[[], bytes], send_at: float) -> None:
        """Build and queue a frame once the monotonic clock reaches `send_at` (see `release`)."""
        self.held.append((send_at, build))

    def release(self, mono: float) -> None:
        """Build and queue the held frames whose send time has come, in the order they were held."""
        while self.held and self.held[0][0] <= mono:
            self.push_frame(self.held.popleft()[1]())

    def push_text(self, text: str) -> None:
        self.texts.append(text)
        self.wake.set()

    async def writer(self) -> None:
        """Send queued texts (first) and frames until the socket closes."""
        while not self.ws.closed:
            await self.wake.wait()
            self.wake.clear()
            while (self.texts or self.frames) and not self.ws.closed:
                if self.stalled:
                    self.texts.clear()
                    self.frames.clear()
                    break
                async with self._send_lock:
                    if self.texts:
                        await self.ws.send_str(self.texts.popleft())
                    else:
                        await self.ws.send_bytes(self.frames.popleft())
                self.last_sent = time.monotonic()

    async def send_raw(self, frame: bytes) -> bool:
        """Send `frame` as one binary message now, between the writer's; False when the
        connection is stalled or gone."""
        if self.stalled or self.ws.closed:
            return False
        async with self._send_lock:
            try:
                await self.ws.send_bytes(frame)
            except (ConnectionError, RuntimeError):  # closed under us
                return False
        self.last_sent = time.monotonic()
        return True

    def abort(self) -> None:
        """Drop the connection without a close frame, as a network failure would."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def describe(self) -> dict:
        return {"id": self.id, "api_key": self.api_key, "subscriptions": len(self.subs),
                "modes": {name: int(np.sum(self.modes == code)) for name, code in MODES.items()},
                "stalled": self.stalled, "ticks_sent": self.ticks_sent,
                "connected_at": self.connected_at, "phase": self.phase}


def phase_of(conn_id: int) -> float:
    """A stable pseudo-random fraction of the tick interval for the `conn_id`-th connection.
    Kite's sockets are independent connections opened at different moments, so nothing lines
    their frames up; spreading them keeps the stand-in from sending every socket's frame at once."""
    return random.Random(conn_id).random()


def error_text(message: str) -> str:
    return orjson.dumps({"type": "error", "data": message}).decode()


class TickerHub:
    """Live connections, grouped by api_key."""

    def __init__(self, auth: AuthBook, uni: Universe, counters: Counters, max_per_key: int,
                 max_tokens: int) -> None:
        self.auth, self.uni, self.counters = auth, uni, counters
        self.max_per_key, self.max_tokens = max_per_key, max_tokens
        self.conns: dict[int, TickerConn] = {}
        self.refusals: dict[str, int] = {}  # api_key -> handshakes still to refuse with 403 (valid token or not)

    def of_key(self, api_key: str) -> list[TickerConn]:
        return [c for c in self.conns.values() if c.api_key == api_key]

    def notify(self, api_key: str, order: dict) -> None:
        """Order postback to every connection of that api_key."""
        text = orjson.dumps({"type": "order", "id": "", "data": order}).decode()
        for conn in self.of_key(api_key):
            if not conn.stalled:
                conn.push_text(text)

    def drop(self, conn_id: int | None = None, api_key: str | None = None, clean: bool = False) -> int:
        targets = [c for c in self.conns.values()
                   if (conn_id is None or c.id == conn_id) and (api_key is None or c.api_key == api_key)]
        for conn in targets:
            if clean:
                conn.push_text(error_text("connection closed by server"))
            conn.abort()
        return len(targets)

    def _refuse_next(self, api_key: str) -> bool:
        left = self.refusals.get(api_key, 0)
        if left:
            self.refusals[api_key] = left - 1
        return left > 0

    async def inject(self, frame: bytes, times: int = 1, interval_ms: float = 0.0) -> dict:
        """Send `frame` on every open connection, `times` rounds `interval_ms` apart; a connection
        that opens meanwhile joins the remaining rounds."""
        reached: set[int] = set()
        sent = 0
        for round_ in range(times):
            if round_ and interval_ms:
                await asyncio.sleep(interval_ms / 1000)
            conns = list(self.conns.values())
            results = await asyncio.gather(*(c.send_raw(frame) for c in conns))
            for conn, ok in zip(conns, results, strict=True):
                if ok:
                    reached.add(conn.id)
                    sent += 1
        self.counters.frames_injected += sent
        return {"connections": len(reached), "frames_sent": sent, "times": times, "interval_ms": interval_ms,
                "bytes": len(frame)}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        api_key = request.query.get("api_key", "")
        account = self.auth.account_for(api_key, request.query.get("access_token", ""))
        if account is None or self._refuse_next(api_key):
            self.counters.ws_refused["403"] += 1
            raise web.HTTPForbidden(text="403 Forbidden: invalid api_key or access_token")
        if len(self.of_key(api_key)) >= self.max_per_key:
            self.counters.ws_refused["429"] += 1
            raise web.HTTPTooManyRequests(text="429 Too Many Requests: connection limit per api_key reached")
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        conn = TickerConn(api_key, ws, request, self.uni, self.max_tokens)
        self.conns[conn.id] = conn
        self.counters.ws_accepted[api_key] += 1
        writer = asyncio.create_task(conn.writer(), name=f"sim-ws-writer-{conn.id}")
        try:
            await self._read(conn)
        finally:
            self.conns.pop(conn.id, None)
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # the peer vanished mid-send: nothing left to tell it
                log.debug("ticker connection %s writer ended: %r", conn.id, exc)
            if not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.close()
        return ws

    async def _read(self, conn: TickerConn) -> None:
        while True:
            if conn.stalled and not await _sit_out_stall(conn):
                return
            msg = await conn.ws.receive()
            if msg.type == WSMsgType.TEXT:
                self._command(conn, msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return

    def _command(self, conn: TickerConn, text: str) -> None:
        try:
            msg = orjson.loads(text)
            action, value = msg["a"], msg["v"]
            if action == "subscribe":
                self._subscribe(conn, _tokens(value))
            elif action == "unsubscribe":
                conn.unsubscribe(_tokens(value))
            elif action == "mode":
                mode, tokens = value
                if mode not in MODES:
                    raise ValueError(f"unknown mode {mode!r}")
                conn.set_mode(MODES[mode], _tokens(tokens))
            else:
                raise ValueError(f"unknown action {action!r}")
        except (ValueError, KeyError, TypeError) as exc:
            conn.push_text(error_text(f"invalid message: {exc}"))

    def _subscribe(self, conn: TickerConn, tokens: list[int]) -> None:
        self.counters.subscribe_messages += 1
        refused = conn.subscribe(tokens)
        if refused:
            self.counters.tokens_refused += refused
            conn.push_text(error_text(
                f"Maximum {self.max_tokens} instruments per connection: {refused} subscription(s) refused."))


async def _sit_out_stall(conn: TickerConn) -> bool:
    """A stalled connection reads nothing, so it answers no pings; False once the peer is gone
    (so a ghost does not hold one of the api_key's connection slots)."""
    while conn.stalled:
        transport = conn.request.transport
        if transport is None or transport.is_closing():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.unstalled.wait(), 0.1)
    return True


def _tokens(value: object) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise ValueError("expected a list of integer instrument tokens")
    return value
