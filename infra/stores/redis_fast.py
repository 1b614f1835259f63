"""The hand-written Redis fast paths, one for each hot path, on redis-py's own connection settings.

`Lane` / `execute` with `command`, `publish_array`, `hset` (the streamer's publisher): commands
packed to RESP here, sent in one write on one of a redis-py client's pooled connections, replies
read back in order. `Lane` holds one connection across flushes so the next flush can be written
before the last one's replies are read. redis-py's pipeline packs every argument through several
Python calls; an HSET of a thousand ticks is two thousand arguments, and that packing cost as much
as rendering the ticks. Our arguments are already bytes, so one `%` per field/value pair does it.
The connection comes from (and goes back to) the client's own pool, so TLS, ACL user and db are
redis-py's; one that failed mid-exchange is disconnected first, so a half-read reply can never
leak into the next command.

`Pipe` (the web's rate-limit and enqueue scripts): one auto-pipelining connection, see its
docstring. It is opened from the same Redis URL through redis-py's own URL parser and connection
classes (scheme, TLS options, username, password, db, timeouts), so both clients agree on what a
URL means.

`tests/bench/bench_redis.py` measures both against redis-py in the same run.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import hiredis
import numpy as np
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT = 3.0  # when the URL names no socket_connect_timeout
CALL_TIMEOUT = 5.0  # when it names no socket_timeout: a reply this late means the connection is stuck

# `\r\n$<n>\r\n` for every length a tick is likely to have: the end of one bulk string and the
# header of the next, looked up for a whole HSET at once instead of formatted per field.
_HEADERS = np.array([b"\r\n$%d\r\n" % n for n in range(1 << 13)], dtype=object)


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


Packed = list[bytes]  # one command as RESP pieces, written back to back


def command(*args: bytes) -> Packed:
    """One command in RESP: `*<n>` then each argument as a bulk string."""
    return [b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)]


def publish_array(channel: bytes, items: Sequence[bytes]) -> Packed:
    """PUBLISH channel [item,item,...]: items and commas as pieces, so the array's bytes are copied
    once, by the write that joins the whole flush, not first into an array of their own."""
    n = len(items)
    if n == 0:
        return [b"*3\r\n$7\r\nPUBLISH\r\n" + bulk(channel) + b"$2\r\n[]\r\n"]
    size = sum(map(len, items)) + n + 1  # brackets and n - 1 commas
    pieces: Packed = [b","] * (2 * n + 1)
    pieces[0] = b"*3\r\n$7\r\nPUBLISH\r\n" + bulk(channel) + b"$%d\r\n[" % size
    pieces[1:-1:2] = items
    pieces[-1] = b"]\r\n"
    return pieces


def hset(key: bytes, mapping: Mapping[bytes, bytes]) -> Packed:
    """HSET key f1 v1 f2 v2 ... in RESP: per pair four pieces (header, field, header, value),
    headers from a table, so no field or value is formatted or copied here."""
    n = len(mapping)
    fields, values = list(mapping.keys()), list(mapping.values())
    out: Packed = [b""] * (4 * n + 2)
    out[0] = b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%s" % (2 + 2 * n, len(key), key)
    out[1:-1:4] = _headers(fields)
    out[2:-1:4] = fields
    out[3:-1:4] = _headers(values)
    out[4:-1:4] = values
    out[-1] = b"\r\n"
    return out


def _headers(items: list[bytes]) -> list[bytes]:
    lengths = np.fromiter(map(len, items), np.int64, len(items))
    if len(items) and lengths.max() >= len(_HEADERS):
        return [b"\r\n$%d\r\n" % n for n in lengths.tolist()]
    return _HEADERS[lengths].tolist()


async def execute(redis: Redis, commands: list[Packed]) -> list:
    """Send the commands in one write and return their replies (an error reply raises)."""
    if not commands:
        return []
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(list(chain.from_iterable(commands)))
        return [await conn.read_response() for _ in commands]
    except BaseException:
        await conn.disconnect(nowait=True)  # replies may be half read: never reuse this socket
        raise
    finally:
        await pool.release(conn)


class Lane:
    """One pooled connection held for pipelining: `write` sends a flush's commands, `read` takes
    the replies of the oldest flush written. Replies come back in the order commands were written
    on one connection, so any number of flushes may be written ahead of their reads.

    Any failure (including a cancelled read) disconnects the socket and bumps `epoch`: replies of
    flushes written before it will never arrive, and the caller tells them apart by the epoch it
    noted at write time. The next write takes a fresh connection.
    """

    def __init__(self, redis: Redis) -> None:
        self.pool = redis.connection_pool
        self.epoch = 0
        self.taken_at = 0.0  # time.monotonic() (the outage clock) when the current or last connection was taken
        self._conn = None

    async def write(self, commands: list[Packed]) -> int:
        """Send the commands in one write; returns the epoch they were written in."""
        if self._conn is None:
            self.taken_at = time.monotonic()
            self._conn = await self.pool.get_connection()
        epoch = self.epoch
        try:
            await self._conn.send_packed_command(list(chain.from_iterable(commands)), check_health=False)
        except BaseException:
            await self.reset()
            raise
        return epoch

    async def read(self, count: int) -> list:
        """The next `count` replies (an error reply raises)."""
        conn = self._conn
        if conn is None:
            raise ConnectionError("no connection to read from")
        try:
            return [await conn.read_response() for _ in range(count)]
        except BaseException:
            await self.reset()
            raise

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        self.epoch += 1
        if conn is not None:
            await conn.disconnect(nowait=True)
            await self.pool.release(conn)

    async def close(self) -> None:
        """Hand the connection back to the pool (clean: nothing may be in flight)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.release(conn)


# --- the web's auto-pipelining connection -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to connect, as redis-py reads the URL."""

    host: str
    port: int
    path: str | None  # a unix socket instead of host:port
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None
    db: int
    connect_timeout: float
    call_timeout: float


def target(url: str) -> Target:
    """Read a Redis URL with redis-py's parser and build its connection object without connecting,
    so the scheme, every query option and the TLS context are exactly the ones redis-py would use."""
    pool = ConnectionPool.from_url(url)
    conn = pool.connection_class(**pool.connection_kwargs)
    tls = conn.ssl_context.get() if isinstance(conn, SSLConnection) else None
    return Target(
        host=getattr(conn, "host", ""), port=int(getattr(conn, "port", 0) or 0),
        path=conn.path if isinstance(conn, UnixDomainSocketConnection) else None, tls=tls,
        username=conn.username, password=conn.password, db=int(conn.db or 0),
        connect_timeout=conn.socket_connect_timeout or CONNECT_TIMEOUT,
        call_timeout=conn.socket_timeout or CALL_TIMEOUT,
    )


def setup_commands(t: Target) -> list[tuple[Any, ...]]:
    """AUTH as redis-py sends it (one argument without a user, for servers that predate ACLs), then
    SELECT."""
    setup: list[tuple[Any, ...]] = []
    if t.password is not None or t.username:
        setup.append(("AUTH", t.username, t.password or "") if t.username else ("AUTH", t.password))
    if t.db:
        setup.append(("SELECT", t.db))
    return setup


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


class Pipe:
    """An auto-pipelining connection for the request hot path.

    Every web request makes two script calls. Through a pooled client each costs a connection
    checkout, a readiness probe and a syscall pair; here all calls share one connection, the commands
    issued during one turn of the event loop leave in a single write, and replies are matched to
    callers in order (Redis answers a connection's commands in the order sent). Under load many
    requests share one round trip and one syscall; a lone request waits for nothing.

    Scripts are called by SHA; a server that does not know one yet (fresh or restarted Redis) gets
    the source once through EVAL, which also caches it. A lost connection fails the calls in flight
    with redis-py's ConnectionError, as a pooled client would, and the next call reconnects. One
    connect is tried at a time: calls that arrive while it is under way share its outcome, so an
    outage costs one attempt per connect timeout at most, not one per request.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.target = target(url)
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
        t = self.target = target(self.url)  # read again: the URL may have been pointed elsewhere
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(t.connect_timeout):
            if t.path is not None:
                _, conn = await loop.create_unix_connection(_Conn, t.path)
            else:
                _, conn = await loop.create_connection(_Conn, t.host, t.port, ssl=t.tls)
            setup = [conn.send(hiredis.pack_command(args)) for args in setup_commands(t)]
            for reply in await asyncio.gather(*setup):
                if isinstance(reply, hiredis.ReplyError):
                    conn.transport.close()  # type: ignore[union-attr]
                    raise RedisConnectionError(f"redis refused the connection setup: {reply}")
        return conn

    async def _send(self, args: tuple[Any, ...]) -> Any:
        conn = await self._connection()
        try:
            async with asyncio.timeout(self.target.call_timeout):
                return await conn.send(hiredis.pack_command(args))
        except TimeoutError:
            if conn.transport is not None:
                conn.transport.abort()  # fails everything queued behind this call too
            raise RedisTimeoutError(f"no reply from redis within {self.target.call_timeout} s") from None

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
