"""Resuming a `/ws/ticks` subscription from where the client left off (`"since": {"offset", "epoch"}`).

The client's live feed is held aside first (`WsClient.hold`), then what it missed is read from the
history stream (XRANGE after its offset, page by page, filtered to what it subscribes to) and queued
ahead of the held live messages; held messages the replay already covered (at or below the last
replayed offset) are dropped, so nothing arrives twice and nothing falls between replay and live.

When the history cannot say what was missed (its offset was trimmed away, or the counts restarted
under a new epoch, or the streamer publishes bare arrays) the client is sent a `gap` message
naming the stream, the offsets between which messages were lost and why; the caller then sends
what stands in for them (the latest ticks, the whole chain, the order updates history still holds).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from ticker.core.contracts import Names
from ticker.core.tick_envelope import StreamPosition, offset_order
from ticker.http.ws.hub import Stamped, WsClient
from ticker.infra.stores import tick_history
from ticker.infra.stores.tick_history import Entry

HISTORY_OFF = "history_off"  # TICK_MESSAGE_FORMAT=array: nothing is kept to replay
OVERFLOW = "overflow"  # the client fell behind while history was replayed: not all of it could be sent
REPLAY_PATIENCE = 30.0  # seconds a replay waits for room in a client's queue before giving up
# Seconds a replay works before it lets other clients' messages through: history filtered down to
# a few ticks fills no queue, so nothing else makes it wait; a turn after every entry would cost one
# loop turn per entry (an orders history is many small ones).
REPLAY_TURN = 0.005


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages of `stream` after `since` that cannot be replayed: lost up to (not including) `to`,
    the oldest offset history still holds (None when it holds nothing)."""

    stream: str
    since: str
    to: str | None
    epoch: str | None
    reason: str

    def message(self) -> bytes:
        return orjson.dumps({"type": "gap", "stream": self.stream, "from": self.since, "to": self.to,
                             "epoch": self.epoch, "reason": self.reason})


async def find_gap(redis: Redis, names: Names, stream: str, key: str, since: StreamPosition, *, envelope: bool) -> Gap | None:
    """None when every message after `since` is still in history `key`; else the gap."""
    reason = await tick_history.resume_check(redis, names, key, since) if envelope else HISTORY_OFF
    if reason is None:
        return None
    oldest, _ = await tick_history.edges(redis, key)
    return Gap(stream, since.offset, oldest, await tick_history.current_epoch(redis, names), reason)


async def replay(redis: Redis, key: str, after: str, client: WsClient,
                 convert: Callable[[Entry], Iterable[bytes]]) -> tuple[str, bool]:
    """Queue every entry of history `key` after offset `after` (as `convert` makes it into messages
    for this client), waiting for room in the client's queue rather than dropping. Returns the last
    offset replayed (`after` when there was nothing) and whether all was: a client that takes
    nothing for REPLAY_PATIENCE seconds is given up on."""
    queue, loop = client.queue, asyncio.get_running_loop()
    try:
        async with contextlib.aclosing(tick_history.pages_after(redis, key, after)) as pages:
            async for entries in pages:
                turn = loop.time()
                for entry in entries:
                    for message in convert(entry):
                        if not queue.full():  # a timeout costs more than the put: only when it must wait
                            queue.put_nowait(message)
                            continue
                        async with asyncio.timeout(REPLAY_PATIENCE):
                            await queue.put(message)
                    after = entry.offset
                    if loop.time() - turn > REPLAY_TURN:
                        await asyncio.sleep(0)
                        turn = loop.time()
        return after, True
    except TimeoutError:
        return after, False


def covered(stream: str, last: str, also: Callable[[Stamped], bool] = lambda _: True) -> Callable[[bytes], bool]:
    """Whether a held live message was already sent by a replay of `stream` up to offset `last`."""
    limit = offset_order(last)

    def replayed(message: bytes) -> bool:
        return (isinstance(message, Stamped) and message.stream == stream and bool(message.offset)
                and offset_order(message.offset) <= limit and also(message))

    return replayed


def entry_items(entry: Entry) -> tuple[list, StreamPosition]:
    items = orjson.loads(entry.items)
    return (items if isinstance(items, list) else []), StreamPosition(entry.offset, entry.epoch)
