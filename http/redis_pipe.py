"""An auto-pipelining Redis connection for the request hot path (rate limit and enqueue scripts).

Every request makes two script calls. Through a pooled client each costs a connection checkout, a
readiness probe and a syscall pair; here all calls share one connection, the commands issued during
one turn of the event loop leave in a single write, and replies are matched to callers in order
(Redis answers a connection's commands in the order sent). Under load many requests share one round
trip and one syscall; a lone request waits for nothing (the write goes out on the next loop turn).

Scripts are called by SHA; a server that does not know one yet (fresh or restarted Redis) gets the
source once through EVAL, which also caches it. A lost connection fails the calls in flight with
redis-py's ConnectionError, as a pooled client would (callers decide: the rate limit lets requests
through, an enqueue answers 503), and the next call reconnects. One connect is tried at a time: calls
that arrive while it is under way share its outcome, so an outage (or a server that does not answer
at all) costs one attempt per `CONNECT_TIMEOUT` at most, not one per request, and the first call
after Redis is back gets through.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT = 3.0
CALL_TIMEOUT = 5.0  # a reply this late means the connection is stuck: drop it, the next call reconnects


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future] = collections.deque()
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, packed: bytes) -> asyncio.Future:
        if self.lost is not None or self.transport is None:
            raise RedisConnectionError("redis connection lost")
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.out.append(packed)
        if len(self.out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return future

    def _flush(self) -> None:
        if self.out and self.transport is not None and self.lost is None:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if not future.done():  # its caller may have been cancelled; the reply is still consumed
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RedisConnectionError("redis closed the connection")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(RedisConnectionError(f"redis connection lost: {self.lost}"))


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _reply(reply: Any) -> Any:
    if isinstance(reply, hiredis.ReplyError):
        text = str(reply)
        # a restarted Redis still reading its data set: unavailable for now, as redis-py reports it
        raise BusyLoadingError(text) if text.startswith("LOADING") else ResponseError(text)
    return reply


class RedisPipe:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: _Conn | None = None
        self._connecting: asyncio.Future[_Conn] | None = None  # the connect under way, shared by callers

    async def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        attempt = self._connecting
        if attempt is None or attempt.done():
            attempt = self._connecting = asyncio.ensure_future(self._reconnect())
            attempt.add_done_callback(_retrieved)  # its failure is its callers' to report, not the loop's
        return await asyncio.shield(attempt)  # a caller that gives up does not cancel it for the others

    async def _reconnect(self) -> _Conn:
        try:
            self._conn = await self._connect()
        except RedisConnectionError:
            raise
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to redis: {type(exc).__name__}") from exc
        return self._conn

    async def _connect(self) -> _Conn:
        parts = urlsplit(self.url)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if parts.scheme == "unix":
                _, conn = await loop.create_unix_connection(_Conn, parts.path)
                db = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("db", "0")
            else:
                tls = ssl.create_default_context() if parts.scheme == "rediss" else None
                _, conn = await loop.create_connection(_Conn, parts.hostname or "127.0.0.1", parts.port or 6379,
                                                       ssl=tls)
                db = parts.path.lstrip("/") or "0"
            setup = []
            if parts.password:
                user = unquote(parts.username) if parts.username else "default"
                setup.append(conn.send(hiredis.pack_command(("AUTH", user, unquote(parts.password)))))
            setup.append(conn.send(hiredis.pack_command(("SELECT", db))))
            for reply in await asyncio.gather(*setup):
                if isinstance(reply, hiredis.ReplyError):
                    conn.transport.close()  # type: ignore[union-attr]
                    raise RedisConnectionError(f"redis refused the connection setup: {reply}")
        return conn

    async def _send(self, args: tuple[Any, ...]) -> Any:
        conn = await self._connection()
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                return await conn.send(hiredis.pack_command(args))
        except TimeoutError:
            if conn.transport is not None:
                conn.transport.abort()  # fails everything queued behind this call too
            raise RedisTimeoutError(f"no reply from redis within {CALL_TIMEOUT} s") from None

    async def command(self, *args: Any) -> Any:
        return _reply(await self._send(args))

    async def call(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        reply = await self._send(("EVALSHA", script.sha, len(keys), *keys, *args))
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            return await self.command("EVAL", script.source, len(keys), *keys, *args)
        return _reply(reply)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn._flush()
            if conn.waiting:  # let replies to calls already sent come back
                await asyncio.gather(*list(conn.waiting), return_exceptions=True)
            conn.transport.close()
