"""Sequenced channels: the script that publishes one message, and the reads that replay them.

`SEQUENCED` runs once per message, in the publisher's pipeline (EVALSHA, packed by
`redis_fast.script_array`), atomically: count the message on its channel (HINCRBY on
`Names.sequence`, so every streamer replica shares one `seq` per channel), append it to the
channel's history stream with approximate trimming, then PUBLISH the envelope carrying the entry id
as its `offset` (the format is `core/tick_envelope.py`). The sequence hash's `epoch` is made the
first time a message is counted after the hash was lost, so a restarted count is told apart.

Streams: `Names.ticks_history` (options and underlying, trimmed to TICK_HISTORY_SECONDS by MINID),
`chain_history` (likewise) and `orders_history` (the last ORDERS_HISTORY_MAX updates, MAXLEN).
Entry fields: `c` channel, `seq`, `e` epoch, `d` the items' JSON array.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from ticker.core.contracts import Names
from ticker.core.tick_envelope import StreamPosition

ORDERS_HISTORY_MAX = 100_000  # order updates kept: more than a busy trading day's
REPLAY_PAGE = 1_000  # stream entries read per XRANGE while replaying, at most
FIRST_PAGE = 16  # entries in the first XRANGE of a replay, before their size is known
PAGE_BYTES = 8 << 20  # items read per XRANGE while replaying, about (1,000 ticks are ~400 KB)

# KEYS: channel, history stream, sequence hash. ARGV: items key, MINID|MAXLEN, how much to keep
# (milliseconds for MINID, entries for MAXLEN), the items' JSON array.
SEQUENCED = b"""
local seq = redis.call('HINCRBY', KEYS[3], KEYS[1], 1)
local epoch = redis.call('HGET', KEYS[3], 'epoch')
local now = redis.call('TIME')
if not epoch then
  epoch = now[1] .. '-' .. now[2]
  redis.call('HSET', KEYS[3], 'epoch', epoch)
end
local keep = ARGV[3]
if ARGV[2] == 'MINID' then
  keep = string.format('%.0f', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3]))
end
local id = redis.call('XADD', KEYS[2], ARGV[2], '~', keep, '*', 'c', KEYS[1], 'seq', seq, 'e', epoch, 'd', ARGV[4])
redis.call('PUBLISH', KEYS[1], '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '","offset":"' .. id ..
  '","ts":' .. string.match(id, '^%d+') .. ',"' .. ARGV[1] .. '":' .. ARGV[4] .. '}')
return seq
"""
SEQUENCED_SHA = hashlib.sha1(SEQUENCED).hexdigest().encode()
# The same on a sharded tick bus (a Redis Cluster): sharded pub/sub, the channel in its shard's slot.
SEQUENCED_SHARDED = SEQUENCED.replace(b"redis.call('PUBLISH'", b"redis.call('SPUBLISH'")
SEQUENCED_SHARDED_SHA = hashlib.sha1(SEQUENCED_SHARDED).hexdigest().encode()

# A sharded bus's directory: KEYS members set, directory channel (one slot); ARGV the shard's tag.
# A shard new to the set is told on the channel, so subscribers start on it without polling.
ANNOUNCE = b"""
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('SPUBLISH', KEYS[2], ARGV[1])
end
return 0
"""
ANNOUNCE_SHA = hashlib.sha1(ANNOUNCE).hexdigest().encode()


def script(sharded: bool) -> tuple[bytes, bytes]:
    """The sequencing script and its SHA1 for a plain or a sharded tick bus."""
    return (SEQUENCED_SHARDED, SEQUENCED_SHARDED_SHA) if sharded else (SEQUENCED, SEQUENCED_SHA)


def script_call(names: Names, channel: str, history_seconds: int) -> tuple[list[str], list[str]]:
    """The keys and the leading arguments of `SEQUENCED` for one channel (the items go last)."""
    if channel == names.orders:
        return [channel, names.orders_history, names.sequence], ["updates", "MAXLEN", str(ORDERS_HISTORY_MAX)]
    stream, key = (names.chain_history, "chains") if channel == names.chain else (names.ticks_history, "ticks")
    return [channel, stream, names.sequence], [key, "MINID", str(history_seconds * 1000)]


async def publish_sequenced(redis: Redis, names: Names, channel: str, items: list[bytes], *,
                            envelope: bool, history_seconds: int, sharded: bool = False) -> None:
    """One message through redis-py (the web's postbacks): an envelope by `SEQUENCED`, or the
    items one PUBLISH each as before envelopes (TICK_MESSAGE_FORMAT=array). `sharded`: `redis` is
    a cluster client and `names` the message's shard (`Names.shard`)."""
    if not envelope:
        for item in items:
            await (redis.spublish(channel, item) if sharded else redis.publish(channel, item))
        return
    keys, args = script_call(names, channel, history_seconds)
    body = b"[" + b",".join(items) + b"]"
    source, sha = script(sharded)
    try:
        await redis.evalsha(sha.decode(), len(keys), *keys, *args, body)
    except NoScriptError:  # a restarted Redis (a promoted replica) does not know it
        await redis.script_load(source)  # a cluster client loads it on every master
        await redis.evalsha(sha.decode(), len(keys), *keys, *args, body)


@dataclass(frozen=True, slots=True)
class Entry:
    """One message read back from a history stream."""

    offset: str
    channel: str
    seq: int
    epoch: str
    items: bytes  # the JSON array as published


def _entry(raw_id: bytes | str, fields: dict) -> Entry:
    def text(value: bytes | str | None) -> str:
        return value.decode() if isinstance(value, bytes) else (value or "")

    def field(name: str) -> bytes | str | None:
        return fields.get(name.encode(), fields.get(name))

    items = field("d") or b"[]"
    return Entry(text(raw_id), text(field("c")), int(field("seq") or 0), text(field("e")),
                 items if isinstance(items, bytes) else items.encode())


async def current_epoch(redis: Redis, names: Names) -> str | None:
    value = await redis.hget(names.sequence, "epoch")
    return value.decode() if isinstance(value, bytes) else value


async def holds(redis: Redis, stream: str, offset: str) -> bool:
    """Whether the stream still has the entry at `offset` (so nothing after it was trimmed)."""
    return bool(await redis.xrange(stream, offset, offset, count=1))


async def edges(redis: Redis, stream: str) -> tuple[str | None, str | None]:
    """The oldest and the newest offset the stream holds (None when it is empty)."""
    first = await redis.xrange(stream, "-", "+", count=1)
    last = await redis.xrevrange(stream, "+", "-", count=1)
    return (_entry(*first[0]).offset if first else None, _entry(*last[0]).offset if last else None)


async def entries_after(redis: Redis, stream: str, offset: str, page: int = REPLAY_PAGE) -> list[Entry]:
    """Up to `page` entries strictly after `offset`, oldest first."""
    return [_entry(i, f) for i, f in await redis.xrange(stream, f"({offset}", "+", count=page)]


async def pages_after(redis: Redis, stream: str, offset: str) -> AsyncGenerator[list[Entry], None]:
    """Every entry strictly after `offset`, oldest first, page by page. Each page is sized by the
    entries just read to about PAGE_BYTES (a busy stream's entries hold a thousand ticks, a quiet
    one's a few: a count alone would be either a huge read or many small ones), and is read while
    the caller works on the one before. Close it (`contextlib.aclosing`) when leaving early."""
    count = FIRST_PAGE
    ahead = asyncio.ensure_future(entries_after(redis, stream, offset, count))
    try:
        while True:
            entries = await ahead
            if len(entries) < count:
                if entries:
                    yield entries
                return
            count = _page_count(entries)
            ahead = asyncio.ensure_future(entries_after(redis, stream, entries[-1].offset, count))
            yield entries
    finally:
        if not ahead.done():
            ahead.cancel()
        elif not ahead.cancelled():
            ahead.exception()  # read by nobody now: taken, so it is not reported as lost


def _page_count(entries: list[Entry]) -> int:
    size = sum(len(entry.items) for entry in entries) / len(entries)
    return max(1, min(REPLAY_PAGE, int(PAGE_BYTES / max(size, 1.0))))


async def resume_check(redis: Redis, names: Names, stream: str, since: StreamPosition) -> str | None:
    """Why a client at `since` cannot resume from history (None: it can): `epoch_changed` when the
    counts restarted since, `trimmed` when its offset is older than the history."""
    if await current_epoch(redis, names) != since.epoch:
        return "epoch_changed"
    if not await holds(redis, stream, since.offset):
        return "trimmed"
    return None
