"""One Kite ticker WebSocket: connect, subscribe, read, and come back after any failure.

The connection holds the tokens it should stream (token -> mode) and re-sends all of them on
every (re)connect, in batches, as Kite's protocol asks: `{"a":"subscribe","v":[...]}` then
`{"a":"mode","v":[mode,[...]]}`. A socket silent (not even a heartbeat) for STALL_SECONDS is
treated as dead. Reconnects back off exponentially with full jitter; the delay resets once a
connection has delivered data. A 403 on the handshake means Kite refused the access token: the
connection reports it and stops, since retrying with the same token cannot help.

The socket knows nothing of what is done with the frames: it hands every binary and text frame to
a `FrameSink` and counts its own life on a `SocketMetrics`, both small protocols the process that
owns the socket implements (the streamer's decode stage and its Prometheus metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import WSMsgType

from ticker.core.backoff import jittered
from ticker.core.wire_layout import MODE_NAMES as MODES
from ticker.core.wire_layout import Mode

log = logging.getLogger(__name__)
_CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
_CONNECT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


class FrameSink(Protocol):
    """Where a socket's frames go. Called synchronously by the reader, so it must be quick."""

    def frame(self, account_id: str, data: bytes) -> int:
        """A binary frame; returns how many ticks it held (0 for a heartbeat or a bad frame)."""
        ...

    def text(self, account_id: str, text: str) -> None:
        """A JSON text frame (order postbacks, errors, messages)."""
        ...


class Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Level(Count, Protocol):
    def dec(self, amount: float = 1) -> None: ...


class CountByLabel(Protocol):
    def labels(self, *values: str) -> Count: ...


class SocketMetrics(Protocol):
    """What a socket counts: open connections, reconnects by cause, refused access tokens."""

    @property
    def connections(self) -> Level: ...

    @property
    def reconnects(self) -> CountByLabel: ...

    @property
    def token_rejections(self) -> Count: ...


class TokenRejected(Exception):
    """Kite answered the ticker handshake with 403: the access token is not (or no longer) valid."""


@dataclass(frozen=True)
class Credentials:
    api_key: str
    access_token: str = field(repr=False)


@dataclass(frozen=True)
class Timing:
    stall_seconds: float
    reconnect_base: float
    reconnect_max: float
    subscribe_batch: int

    def backoff(self, attempt: int) -> float:
        """Jittered exponential backoff: uniform in [base*2^attempt / 2, base*2^attempt], capped."""
        return jittered(attempt, self.reconnect_base, self.reconnect_max)


def ticker_url(ws_root: str, creds: Credentials) -> str:
    """Kite's ticker URL: the root with api_key and access_token as query parameters."""
    return f"{ws_root}?{urlencode({'api_key': creds.api_key, 'access_token': creds.access_token})}"


def subscribe_messages(tokens: dict[int, Mode], batch: int) -> list[str]:
    """Subscribe + mode messages for `tokens`, at most `batch` tokens per message."""
    out: list[str] = []
    items = sorted(tokens)
    for start in range(0, len(items), batch):
        part = items[start:start + batch]
        out.append(orjson.dumps({"a": "subscribe", "v": part}).decode())
        for mode in MODES:
            chosen = [t for t in part if tokens[t] == mode]
            if chosen:
                out.append(orjson.dumps({"a": "mode", "v": [mode, chosen]}).decode())
    return out


def unsubscribe_messages(tokens: list[int], batch: int) -> list[str]:
    items = sorted(tokens)
    return [orjson.dumps({"a": "unsubscribe", "v": items[s:s + batch]}).decode()
            for s in range(0, len(items), batch)]


class TickerSocket:
    def __init__(self, account_id: str, index: int, creds: Credentials, ws_root: str,
                 session: aiohttp.ClientSession, sink: FrameSink, metrics: SocketMetrics, timing: Timing,
                 on_rejected: Callable[[str, Credentials], None]) -> None:
        self.account_id = account_id
        self.index = index
        self.creds = creds
        self.ws_root = ws_root
        self.session = session
        self.sink = sink
        self.metrics = metrics
        self.timing = timing
        self.on_rejected = on_rejected
        self.tokens: dict[int, Mode] = {}
        self.connected = False
        self.rejected = False
        self.last_data = 0.0  # monotonic time of the last frame of any kind
        self.connects = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect and stream until cancelled (or until Kite refuses the token)."""
        attempt = 0
        while True:
            try:
                ws = await self._connect()
            except TokenRejected:
                self.rejected = True
                self.metrics.token_rejections.inc()
                log.warning("Kite refused the access token", extra={"account_id": self.account_id})
                self.on_rejected(self.account_id, self.creds)
                return
            except _CONNECT_ERRORS as exc:
                self.metrics.reconnects.labels("connect_failed").inc()
                delay = self.timing.backoff(attempt)
                log.warning("Kite ticker connect failed", extra={
                    "account_id": self.account_id, "connection": self.index, "error": _describe(exc),
                    "retry_in": round(delay, 2)})
                attempt += 1
                await asyncio.sleep(delay)
                continue
            try:
                delivered, reason = await self._stream(ws)
            except Exception:  # a bug downstream must cost this socket a reconnect, not its life
                log.exception("ticker connection failed unexpectedly", extra={
                    "account_id": self.account_id, "connection": self.index})
                delivered, reason = False, "failed"
            self.metrics.reconnects.labels(reason).inc()
            attempt = 0 if delivered else attempt + 1
            delay = self.timing.backoff(attempt)
            log.info("Kite ticker connection lost; reconnecting", extra={
                "account_id": self.account_id, "connection": self.index, "reason": reason,
                "retry_in": round(delay, 2)})
            await asyncio.sleep(delay)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        try:
            return await self.session.ws_connect(
                ticker_url(self.ws_root, self.creds), headers={"X-Kite-Version": "3"}, autoping=True,
                heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=1.0), max_msg_size=16 * 2**20)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 403:
                raise TokenRejected from None
            raise

    async def _stream(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[bool, str]:
        """Subscribe everything, then read until the socket closes or stalls."""
        self._ws = ws
        self.connected = True
        self.connects += 1
        self.metrics.connections.inc()
        self.last_data = time.monotonic()
        try:
            await self._send(subscribe_messages(self.tokens, self.timing.subscribe_batch))
            return await self._read(ws)
        except _CONNECT_ERRORS as exc:
            log.debug("ticker socket error", extra={"account_id": self.account_id, "error": _describe(exc)})
            return False, "error"
        finally:
            self._ws = None
            self.connected = False
            self.metrics.connections.dec()
            await ws.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[bool, str]:
        delivered = False
        frame, text = self.sink.frame, self.sink.text
        while True:
            try:
                msg = await ws.receive(timeout=self.timing.stall_seconds)
            except TimeoutError:
                log.warning("Kite ticker connection stalled", extra={
                    "account_id": self.account_id, "connection": self.index,
                    "silent_for": self.timing.stall_seconds})
                return delivered, "stall"
            self.last_data = time.monotonic()
            if msg.type is WSMsgType.BINARY:
                delivered = frame(self.account_id, msg.data) > 0 or delivered
            elif msg.type is WSMsgType.TEXT:
                text(self.account_id, msg.data)
            elif msg.type in _CLOSING:
                return delivered, "closed"
            else:
                return delivered, "error"

    # --- subscriptions ---------------------------------------------------------------------------
    async def update(self, add: dict[int, Mode], remove: list[int]) -> None:
        """Change what this connection streams; sent at once when connected, else on connect."""
        for token in remove:
            self.tokens.pop(token, None)
        self.tokens.update(add)
        messages = unsubscribe_messages(remove, self.timing.subscribe_batch) if remove else []
        messages += subscribe_messages(add, self.timing.subscribe_batch) if add else []
        try:
            await self._send(messages)
        except _CONNECT_ERRORS:
            pass  # the reader notices the broken socket; the reconnect re-sends everything

    async def _send(self, messages: list[str]) -> None:
        ws = self._ws
        if ws is None or ws.closed or not messages:
            return
        async with self._send_lock:
            for message in messages:
                await ws.send_str(message)

    def describe(self) -> dict:
        return {"index": self.index, "connected": self.connected, "tokens": len(self.tokens),
                "connects": self.connects, "rejected": self.rejected,
                "silent_for": round(time.monotonic() - self.last_data, 3) if self.connected else None}


def _describe(exc: BaseException) -> str:
    """Exception class and, for HTTP errors, the status; never the URL (it carries the token)."""
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__}({status})" if status else type(exc).__name__
