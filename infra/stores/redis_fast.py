"""The hand-written Redis fast path of the streamer's publisher, on redis-py's own connections.

`Lane` / `execute` with `command`, `publish_array`, `script_array`, `hset`: commands packed to RESP here, sent in
one write on one of a redis-py client's pooled connections, replies read back in order. `Lane` holds one connection across flushes so the next flush can be written
before the last one's replies are read. redis-py's pipeline packs every argument through several
Python calls; an HSET of a thousand ticks is two thousand arguments, and that packing cost as much
as rendering the ticks. Our arguments are already bytes, so one `%` per field/value pair does it.
The connection comes from (and goes back to) the client's own pool, so TLS, ACL user and db are
redis-py's; one that failed mid-exchange is disconnected first, so a half-read reply can never
leak into the next command.

`tests/bench/bench_redis.py` measures it against redis-py's pipeline in the same run: redis-py
costs the publisher 2-5x the CPU per tick. (The web's hot path needs no such thing: its scripts go
through redis-py, batched by `ticker.infra.stores.redis.AutoPipeline`, as fast as a hand-written
connection was in the same bench.)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np
from redis.asyncio import Redis

# `\r\n$<n>\r\n` for every length a tick is likely to have: the end of one bulk string and the
# header of the next, looked up for a whole HSET at once instead of formatted per field.
_HEADERS = np.array([b"\r\n$%d\r\n" % n for n in range(1 << 13)], dtype=object)


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


Packed = list[bytes]  # one command as RESP pieces, written back to back


def command(*args: bytes) -> Packed:
    """One command in RESP: `*<n>` then each argument as a bulk string."""
    return [b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)]


def publish_array(channel: bytes, items: Sequence[bytes], verb: bytes = b"PUBLISH") -> Packed:
    """PUBLISH channel [item,item,...] (`verb` SPUBLISH on a cluster): items and commas as pieces,
    so the array's bytes are copied once, by the write that joins the whole flush, not first into an
    array of their own."""
    n = len(items)
    head = b"*3\r\n" + bulk(verb) + bulk(channel)
    if n == 0:
        return [head + b"$2\r\n[]\r\n"]
    size = sum(map(len, items)) + n + 1  # brackets and n - 1 commas
    pieces: Packed = [b","] * (2 * n + 1)
    pieces[0] = head + b"$%d\r\n[" % size
    pieces[1:-1:2] = items
    pieces[-1] = b"]\r\n"
    return pieces


def script_array(sha: bytes, keys: Sequence[bytes], args: Sequence[bytes], items: Sequence[bytes]) -> Packed:
    """EVALSHA sha <keys> <args> [item,item,...]: a script whose last argument is a JSON array,
    packed like `publish_array` (the items are not copied into an array of their own)."""
    head = [b"EVALSHA", sha, b"%d" % len(keys), *keys, *args]
    start = b"*%d\r\n" % (len(head) + 1) + b"".join(bulk(a) for a in head)
    if not items:
        return [start + b"$2\r\n[]\r\n"]
    size = sum(map(len, items)) + len(items) + 1  # brackets and n - 1 commas
    pieces: Packed = [b","] * (2 * len(items) + 1)
    pieces[0] = start + b"$%d\r\n[" % size
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

    def __init__(self, redis: Redis, preamble: Sequence[Packed] = ()) -> None:
        """`preamble`: commands written ahead of the first flush on every connection the lane takes
        (SCRIPT LOAD: a restarted Redis, or a replica promoted, does not know the scripts); their
        replies are read and dropped ahead of that flush's."""
        self.pool = redis.connection_pool
        self.preamble = list(preamble)
        self.epoch = 0
        self.taken_at = 0.0  # time.monotonic() (the outage clock) when the current or last connection was taken
        self._conn = None
        self._unread_preamble = 0

    @property
    def holding(self) -> bool:
        """Whether the next write goes on the connection the last one went on (else a fresh one)."""
        return self._conn is not None

    async def write(self, commands: list[Packed]) -> int:
        """Send the commands in one write; returns the epoch they were written in."""
        conn = self._conn
        if conn is None:
            self.taken_at = time.monotonic()
            conn = self._conn = await self.pool.get_connection()
            commands = self.preamble + commands
            self._unread_preamble = len(self.preamble)
        epoch = self.epoch
        try:
            await conn.send_packed_command(list(chain.from_iterable(commands)), check_health=False)
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
            while self._unread_preamble:
                await conn.read_response()
                self._unread_preamble -= 1
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
