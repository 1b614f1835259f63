"""Redis through redis-py (asyncio, hiredis parser): the connection factory, and the web's
auto-pipelined script calls."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def connect(url: str, *, decode: bool = False, max_connections: int = 64, retries: int = 0,
            name: str | None = None) -> Redis:
    """A client with a bounded pool; `health_check_interval` keeps idle pub/sub sockets honest.

    `retries` > 0 retries a command that hit a connection error on a fresh connection: a pooled
    socket outlives a Redis restart, and its first command after one fails although Redis is back.
    Leave it 0 for pub/sub listeners, which must notice a reconnect (messages sent meanwhile are lost).
    `name` is the connections' client name (CLIENT SETNAME), to tell them apart in CLIENT LIST.
    """
    tcp = {} if url.startswith("unix:") else {"socket_keepalive": True}  # a unix socket takes no keepalive
    return Redis.from_url(
        url,
        decode_responses=decode,
        max_connections=max_connections,
        health_check_interval=15,
        socket_connect_timeout=3,
        retry=Retry(NoBackoff(), retries) if retries else None,
        client_name=name,
        **tcp,
    )


def _arg(value: Any) -> bytes:
    """One argument as redis-py's encoder writes it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    if isinstance(value, memoryview):
        return value.tobytes()
    raise DataError(f"invalid input of type {type(value).__name__!r}: convert to bytes, str or a number first")


def pack_commands(commands: list[tuple[Any, ...]]) -> bytes:
    """The commands in the Redis protocol, as one buffer (redis-py's `pack_commands` gives the same
    bytes, several times slower). A first argument with spaces is split, as redis-py does."""
    out = []
    for args in commands:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        out.append(b"*%d\r\n" % len(args))
        for value in args:
            kind = type(value)  # the two kinds every hot-path call sends, without isinstance
            arg = value if kind is bytes else value.encode() if kind is str else _arg(value)
            out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


class Script:
    """A Lua script called by SHA (EVALSHA), its source sent once when the server does not know it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class AutoPipeline:
    """The web's hot path (rate-limit and enqueue scripts): calls made while the last batch is on
    its way go out together as the next batch (one write, as a redis-py pipeline would), one batch
    at a time.

    Under load many requests share one round trip and one syscall pair, batches growing with the
    load; a lone request waits for nothing. A batch that fails on the connection fails its calls
    with redis-py's ConnectionError (callers decide: the rate limit lets requests through, an
    enqueue answers 503), and the next batch connects again: during an outage one connect is tried
    at a time, and the calls that arrived meanwhile share its outcome. A batch without its replies
    after the URL's `socket_timeout` (else `CALL_TIMEOUT`) fails with TimeoutError; redis-py drops
    that connection. Reply errors (a script's error, NOSCRIPT) go to their own caller only.
    """

    CALL_TIMEOUT = 5.0

    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = connect(url, max_connections=4)  # one batch in flight at a time
        kwargs = self.redis.connection_pool.connection_kwargs
        self.call_timeout = float(kwargs.get("socket_timeout") or self.CALL_TIMEOUT)
        self._next: list[tuple[tuple[Any, ...], asyncio.Future]] = []
        self._runner: asyncio.Task | None = None

    async def command(self, *args: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._next.append((args, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())  # starts after this turn: the batch forms
        reply = await future
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def commands(self, *calls: tuple[Any, ...]) -> list[Any]:
        """Several commands in the same batch (one round trip), their replies in order; the first
        reply error is raised once every reply is in."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in calls]
        self._next.extend(zip(calls, futures, strict=True))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        replies = [await future for future in futures]
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    async def call(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a fresh or restarted server: EVAL runs it and caches it
            return await self.command("EVAL", script.source, len(keys), *keys, *args)

    async def _run(self) -> None:
        while self._next:
            batch, self._next = self._next, []
            replies = await self._send([args for args, _ in batch])
            for (_, future), reply in zip(batch, replies, strict=True):
                if not future.done():  # its caller may have given up; the reply was read anyway
                    future.set_result(reply)

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One write of every command, then their replies in order, on one pooled connection.
        (What a redis-py pipeline does, without its per-command bookkeeping: this is the hot path.)"""
        try:
            async with asyncio.timeout(self.call_timeout):
                return await self._exchange(pack_commands(commands), len(commands))
        except TimeoutError:
            failure: BaseException = RedisTimeoutError(f"no reply from redis within {self.call_timeout} s")
        except Exception as exc:  # the connection failed: every call of the batch hears it
            failure = exc
        return [failure] * len(commands)

    async def _exchange(self, packed: bytes, count: int) -> list[Any]:
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:  # redis-py drops a connection that fails or is cancelled mid-exchange
            await conn.send_packed_command(packed, check_health=False)
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # a reply error: the connection is still in step
                    replies.append(exc)
            return replies
        finally:
            await pool.release(conn)

    async def close(self) -> None:
        """Let calls already made get their replies, then close the pool."""
        while self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)
        await self.redis.aclose()
