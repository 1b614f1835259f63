"""A feed straight from Redis: the channels' pub/sub plus their history streams.

Each connection subscribes first and waits for Redis to confirm, then reads from history what was
published after the feed's last offset (XRANGE, page by page), then goes live and drops live
messages at or below that offset: the web's `/ws/ticks` resume (`http/ws/history_replay.py`) done
in the subscriber. Lost connections are retried with capped, jittered back-off and resume the same
way, so nothing is missed and nothing comes twice while history still holds the last offset. When
it no longer does (trimmed, or the epoch changed) the feed yields a `StreamGap` and what stands in
for the lost messages: a `Snapshot` of the latest ticks, or every order update history holds.

Memory stays bounded: history is read a page at a time, and live messages wait in Redis, not here.
A consumer that falls far behind is cut off by Redis (its pub/sub output buffer limit) and resumes
from history like after any lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

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
from ticker.core.contracts import ORDERS_SHARD, Names
from ticker.core.tick_envelope import StreamPosition, shard_stream, unwrap
from ticker.infra.stores import tick_history
from ticker.infra.stores.redis import connect
from ticker.infra.stores.shard_subscriber import Resubscribed, ShardSubscriber

log = logging.getLogger("ticker.client")

ORIGIN = "0-0"  # the position before a stream's first entry
HISTORY_OFF = "history_off"  # TICK_MESSAGE_FORMAT=array: bare arrays, no history to resume from
CONFIRM_SECONDS = 10.0  # how long a connection may take to confirm its subscription


@dataclass(frozen=True, slots=True)
class _History:
    """One stream a feed follows: its history key and the names that hold its epoch."""

    key: str
    names: Names


class RedisFeed:
    """`async for event in RedisFeed(url, tokens=[...]):` ticks (options and underlying), and with
    `orders=True` / `chains=True` order updates and chain messages, as typed events.

    `url` is the tick bus's Redis: the deployment's `TICK_REDIS_URL`, or its `REDIS_URL` when that is
    unset. `since` resumes a stream from a position an earlier feed kept (`feed.positions`); without it
    a stream starts at its newest entry. `tokens` keeps only those instruments' ticks. `name` is
    the client name the feed's Redis connections carry (CLIENT LIST).

    `cluster=True`: the tick bus is a Redis Cluster (TICK_REDIS_CLUSTER) and `url` one of its
    nodes. Ticks and chains are then sharded by underlying, each shard a stream of its own
    (`ticks:NIFTY`, `chain:NIFTY`; `positions` keeps one per shard); `underlyings` limits the
    feed to those shards (default: every shard the directory names, and those it names later)."""

    def __init__(self, url: str, *, prefix: str = "ticker:nifty", tokens: Iterable[int] | None = None,
                 ticks: bool = True, orders: bool = False, chains: bool = False,
                 since: Mapping[str, StreamPosition] | None = None, name: str | None = None,
                 backoff: tuple[float, float] = (0.2, 10.0), cluster: bool = False,
                 underlyings: Iterable[str] | None = None) -> None:
        self.url, self.name, self.backoff, self.cluster = url, name, backoff, cluster
        self.names = Names(prefix)
        self.tokens = frozenset(tokens) if tokens is not None else None
        self.underlyings = frozenset(underlyings) if underlyings is not None else None
        self.positions: dict[str, StreamPosition] = dict(since or {})
        self.reconnects = 0  # connections lost and made again
        self.kinds = frozenset(k for k, on in ((TICK_STREAM, ticks), (ORDER_STREAM, orders), (CHAIN_STREAM, chains)) if on)
        if not self.kinds:
            raise ValueError("follow at least one of ticks, orders and chains")
        self.histories: dict[str, _History] = {}  # stream -> its history
        self.streams: dict[str, str] = {}  # channel -> stream
        if not cluster:
            self._follow(None)
        elif ORDER_STREAM in self.kinds:
            self._follow(ORDERS_SHARD)
        self._bare: set[str] = set()  # streams that delivered bare arrays: nothing to resume from

    def _follow(self, shard: str | None) -> None:
        """Follow the chosen kinds of one shard (None: the bus is not sharded)."""
        n = self.names if shard is None else self.names.shard(shard)
        if shard == ORDERS_SHARD:
            kinds = [(ORDER_STREAM, n.orders_history, [n.orders])]
        else:
            kinds = [(TICK_STREAM, n.ticks_history, [n.options, n.underlying]), (CHAIN_STREAM, n.chain_history, [n.chain])]
            if shard is None:
                kinds.append((ORDER_STREAM, n.orders_history, [n.orders]))
        for kind, key, channels in kinds:
            if kind in self.kinds:
                stream = shard_stream(kind, shard)
                self.histories[stream] = _History(key, n)
                self.streams.update(dict.fromkeys(channels, stream))

    def __aiter__(self) -> AsyncIterator[FeedEvent]:
        return self.events()

    async def events(self) -> AsyncIterator[FeedEvent]:
        attempt = 0
        while True:
            redis: Redis = (RedisCluster.from_url(self.url) if self.cluster
                            else connect(self.url, max_connections=4, name=self.name))
            try:
                session = self._cluster_session(redis) if self.cluster else self._session(redis)
                async for event in session:
                    attempt = 0
                    yield event
            except (RedisError, OSError) as exc:
                log.warning("ticker.client: Redis connection lost (%s); resuming", exc)
            finally:
                await redis.aclose()
            await asyncio.sleep(jittered(attempt, *self.backoff))
            attempt += 1
            self.reconnects += 1

    async def _start_positions(self, redis: Redis) -> None:
        """A stream the feed has no position in starts at its newest entry, read before subscribing
        so the fill-in after it covers the rest."""
        for stream, history in self.histories.items():
            if stream not in self.positions:
                _, newest = await tick_history.edges(redis, history.key)
                epoch = await tick_history.current_epoch(redis, history.names)
                self.positions[stream] = StreamPosition(newest or ORIGIN, epoch or "")

    async def _session(self, redis: Redis) -> AsyncIterator[FeedEvent]:
        """One connection: start positions, subscribe, fill in from history, then live."""
        await self._start_positions(redis)
        pubsub = redis.pubsub()
        try:
            await _subscribed(pubsub, list(self.streams))
            for stream in self.histories:
                async for event in self._catch_up(redis, stream):
                    yield event
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "message":
                    live = self._live(_text(message["channel"]), message["data"])
                    if live is not None:
                        yield live
        finally:
            await pubsub.aclose()

    async def _cluster_session(self, redis: Redis) -> AsyncIterator[FeedEvent]:
        """The same on a cluster: sharded subscriptions at each shard's master. The directory is
        subscribed before its members are read, so no shard named meanwhile goes unseen; a shard
        subscribed again after a failover is filled in from its history."""
        directory = self.names.shard_directory
        subscriber = ShardSubscriber(self.url, [directory, *self.streams], name=self.name)
        subscriber.start()
        try:
            await subscriber.subscribed(CONFIRM_SECONDS)
            for shard in sorted(_text(s) for s in await redis.smembers(self.names.shards)):
                self._add_shard(shard, later=False)
            await self._start_positions(redis)
            subscriber.add(self.streams)
            await subscriber.subscribed(CONFIRM_SECONDS)
            for stream in list(self.histories):
                async for event in self._catch_up(redis, stream):
                    yield event
            while True:
                message = await subscriber.get_message(timeout=1.0)
                if message is None:
                    continue
                if isinstance(message, Resubscribed):
                    streams = {self.streams[_text(c)] for c in message.channels if _text(c) in self.streams}
                elif _text(message[0]) == directory:
                    streams = self._add_shard(_text(message[1]), later=True)
                    subscriber.add(self.streams)
                    await subscriber.subscribed(CONFIRM_SECONDS)
                else:
                    live = self._live(_text(message[0]), message[1])
                    if live is not None:
                        yield live
                    continue
                for stream in sorted(streams):
                    async for event in self._catch_up(redis, stream):
                        yield event
        finally:
            await subscriber.aclose()

    def _add_shard(self, shard: str, *, later: bool) -> set[str]:
        """Follow a shard the directory names (unless the feed keeps to other underlyings); returns
        the streams that are new. One named `later`, while the feed runs, is new itself: all of its
        history is news to the feed."""
        if shard == ORDERS_SHARD or (self.underlyings is not None and shard not in self.underlyings):
            return set()
        before = set(self.histories)
        self._follow(shard)
        new = set(self.histories) - before
        if later:
            for stream in new:
                self.positions.setdefault(stream, StreamPosition(ORIGIN, ""))
        return new

    async def _catch_up(self, redis: Redis, stream: str) -> AsyncIterator[FeedEvent]:
        """What `stream` published after the feed's position, or the gap and its stand-in."""
        history, since = self.histories[stream], self.positions[stream]
        key, kind = history.key, stream_kind(stream)
        reason = HISTORY_OFF if stream in self._bare else await self._resume_check(redis, history, since)
        self._bare.discard(stream)
        after = since.offset
        if reason is not None:
            oldest, newest = await tick_history.edges(redis, key)
            epoch = await tick_history.current_epoch(redis, history.names)
            yield StreamGap(stream, since.offset, oldest, reason, epoch)
            if kind == TICK_STREAM:
                yield Snapshot(stream, await self._latest(redis))
            # What follows the stand-in comes after history's newest entry; for orders every
            # update history holds is the stand-in, so they are read from its start.
            after = ORIGIN if kind == ORDER_STREAM else newest or ORIGIN
            self.positions[stream] = StreamPosition(after, epoch or "")
            if kind != ORDER_STREAM:
                return
        async with contextlib.aclosing(tick_history.pages_after(redis, key, after)) as pages:
            async for entries in pages:
                for entry in entries:
                    event = self._accept(stream, entry.channel, _items(entry.items),
                                         StreamPosition(entry.offset, entry.epoch), entry.seq)
                    if event is not None:
                        yield event

    async def _resume_check(self, redis: Redis, history: _History, since: StreamPosition) -> str | None:
        if since.offset != ORIGIN:
            return await tick_history.resume_check(redis, history.names, history.key, since)
        # From a stream's start there is nothing to have been trimmed; only the epoch can differ.
        epoch = await tick_history.current_epoch(redis, history.names)
        return None if not since.epoch or since.epoch == epoch else "epoch_changed"

    def _live(self, channel: str, data: bytes) -> FeedEvent | None:
        stream = self.streams.get(channel)
        try:
            doc = orjson.loads(data)
            items, position = unwrap(doc)
        except (orjson.JSONDecodeError, ValueError):
            log.warning("ticker.client: skipped a malformed message on %s", channel)
            return None
        if stream is None:
            return None
        seq = doc.get("seq") if isinstance(doc, dict) else None
        return self._accept(stream, channel, items, position, seq if isinstance(seq, int) else None)

    def _accept(self, stream: str, channel: str, items: list, position: StreamPosition | None,
                seq: int | None) -> FeedEvent | None:
        """The event for one message, or None when it was already delivered or holds nothing for
        this feed; moves the stream's position on."""
        if channel not in self.streams:
            return None  # the ticks history also holds the channel a feed may not follow
        if position is None:
            self._bare.add(stream)
        else:
            # A live message of another epoch came on a connection that never broke: the counts
            # restarted (Redis was flushed) and nothing was lost; its offset starts the new epoch.
            if delivered(self.positions.get(stream), position):
                return None
            self.positions[stream] = position
        mine = self._mine(items) if stream_kind(stream) == TICK_STREAM else items
        if not mine:
            return None
        offset, epoch = (position.offset, position.epoch) if position else (None, None)
        return published(stream, mine, offset, epoch, seq, channel)

    def _mine(self, ticks: list) -> list[dict[str, Any]]:
        wanted = self.tokens
        return [t for t in ticks if isinstance(t, dict) and (wanted is None or t.get("instrument_token") in wanted)]

    async def _latest(self, redis: Redis) -> list[dict[str, Any]]:
        """The latest tick of each of the feed's tokens (of every instrument, without tokens)."""
        key = self.names.latest
        if self.tokens is None:
            values = list((await redis.hgetall(key)).values())
        else:
            values = await redis.hmget(key, [str(t) for t in sorted(self.tokens)]) if self.tokens else []
        ticks = []
        for value in filter(None, values):
            try:
                ticks.append(orjson.loads(value))
            except orjson.JSONDecodeError:
                continue  # not a tick: skipped like a malformed message
        return self._mine(ticks)


async def _subscribed(pubsub: PubSub, channels: list[str]) -> None:
    """Subscribe and wait for Redis to confirm every channel: from then on nothing published is
    missed, so reading history afterwards leaves no hole between it and the live messages."""
    await pubsub.subscribe(*channels)
    pending = set(channels)
    async with asyncio.timeout(CONFIRM_SECONDS):
        while pending:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "subscribe":
                pending.discard(_text(message["channel"]))


def _items(data: bytes) -> list:
    """A history entry's items; a malformed entry holds none (it is skipped, as live ones are)."""
    try:
        items = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    return items if isinstance(items, list) else []


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
