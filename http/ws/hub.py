"""Tick fan-out: one Redis pub/sub connection per process, routed by instrument token to clients.

The streamer publishes envelopes (core/tick_envelope.py) of ticks on the options and underlying
channels, of option chains on the chain channel (routed by underlying and expiry) and of order
updates on the orders channel (to the clients that asked for them). The hub parses each message
once, encodes each wanted tick once, stamped with its message's offset and epoch, and offers the
same bytes to every client that subscribed to that token (each client's sender wraps them as
`tick` or batched `ticks` messages, carrying the offset a client resumes from). While a client
replays history (`hold` / `release`) its live messages wait aside, and those the replay already
sent are dropped, so a resumed client sees every message once. Each client has a bounded queue
drained by its own sender; when a client is too slow its queue fills and further ticks for it are
dropped and counted, so one stuck phone never grows the process's memory or slows anyone else.

When the pub/sub connection is lost (Redis restarted, killed, or unreachable) the feed resubscribes
on its own, retrying every `RECONNECT_MAX` seconds at most, and at once when the outage watcher
sees Redis back, so ticks flow again within a fraction of a second; clients stay connected. The loss and the return are logged
once each, however many attempts it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import ORDERS_SHARD, Names
from ticker.core.tick_envelope import StreamPosition, offset_order, shard_stream, unwrap
from ticker.http.dependency_watch import REDIS, Outages
from ticker.http.middleware.observe import HttpMetrics
from ticker.infra.stores import tick_history
from ticker.infra.stores.shard_subscriber import Resubscribed, ShardSubscriber

log = logging.getLogger("ticker.http.ws")

RECONNECT_MIN, RECONNECT_MAX = 0.05, 1.0
SHARDS_READY_SECONDS = 10.0  # how long Redis (a cluster) may take to confirm the feed's subscriptions


class Stamped(bytes):
    """A queued tick (wrapped by the sender) and where its message sits in its history stream:
    `stamp` is the `"offset":...,"epoch":...` the client is handed to resume after it (empty for
    a snapshot tick or a bare-array message), `stream` which history, `key` what it routes by
    (a tick's token, a chain's (underlying, expiry)), `ticks` how many ticks it holds (more than
    one for a replayed run, see `stamped_run`)."""

    stream = ""
    offset = ""
    key: Any = None
    stamp = b""
    ticks = 1


class Whole(Stamped):
    """A queued message sent as it is (a `chain` or `orders` message), not wrapped as a tick."""


S = TypeVar("S", bound=Stamped)


ChainKey = tuple[str, str]  # (underlying, expiry as YYYY-MM-DD)
TICKS, CHAIN, ORDERS = "ticks", "chain", "orders"  # the history streams a client resumes on
HELD_MAX_FACTOR = 4  # while a client replays history, up to this many queues' worth of live messages wait


def stamp_of(position: StreamPosition | None, stream: str = "") -> bytes:
    """`"offset":...,"epoch":...` of a message (and its `"stream"` on a sharded bus, where each
    shard has a stream of its own: `ticks:NIFTY`)."""
    if position is None:
        return b""
    doc = {"offset": position.offset, "epoch": position.epoch}
    return orjson.dumps({**doc, "stream": stream} if ":" in stream else doc)[1:-1]


def stamped(data: bytes, cls: type[S], stream: str, position: StreamPosition | None, stamp: bytes,
            key: object = None) -> S:
    item = cls(data)
    item.stream, item.key, item.stamp = stream, key, stamp
    item.offset = position.offset if position else ""
    return item


def stamped_ticks(ticks: list, position: StreamPosition | None, wanted: Callable[[int], bool],
                  stream: str = TICKS) -> Iterator[Stamped]:
    """The ticks of one message that `wanted` takes, each encoded once and stamped with the message's
    position (live from the channel, or replayed from history)."""
    stamp = stamp_of(position, stream)
    for tick in ticks:
        if not isinstance(tick, dict):
            continue
        token = tick.get("instrument_token")
        if type(token) is int and wanted(token):
            yield stamped(encode_tick(tick), Stamped, stream, position, stamp, token)


def stamped_run(ticks: list, position: StreamPosition | None, wanted: set[int], stream: str = TICKS) -> Stamped | None:
    """The ticks of one message that are `wanted` as one queued item, for a `?batch=true` client
    only (one tick per frame needs them apart): their JSON joined with commas, byte for byte what
    a batch send makes of the same ticks queued one by one (orjson writes a list as its items'
    own encodings between commas), encoded in one call and queued once instead of per tick.
    The same ticks as `stamped_ticks` takes, chosen without a Python step per tick when every
    item is an object with an integer token. None when it takes none of them."""
    try:
        tokens = list(map(dict.get, ticks, repeat("instrument_token")))
    except TypeError:  # not every item is an object
        tokens = [tick.get("instrument_token") if isinstance(tick, dict) else None for tick in ticks]
    takes = (map(wanted.__contains__, tokens) if set(map(type, tokens)) == {int}
             else (type(token) is int and token in wanted for token in tokens))
    keep = list(compress(ticks, takes))
    if not keep:
        return None
    run = stamped(orjson.dumps(keep)[1:-1], Stamped, stream, position, stamp_of(position, stream))
    run.ticks = len(keep)
    return run


def whole_message(kind: str, stream: str, data: object, position: StreamPosition | None, key: object = None) -> Whole:
    """A `chain` or `orders` message as the client receives it, with its position when known
    (re-encoded: the channel is not ours to trust)."""
    doc: dict[str, object] = {"type": kind}
    if position is not None:
        doc.update(offset=position.offset, epoch=position.epoch)
        if ":" in stream:
            doc["stream"] = stream
    return stamped(orjson.dumps({**doc, "data": data}), Whole, stream, position, stamp_of(position, stream), key)


def ticks_in(item: bytes) -> int:
    """Ticks in a queued item: a replayed run holds several; anything else counts as one."""
    return item.ticks if isinstance(item, Stamped) else 1


class TickQueue(asyncio.Queue[bytes]):
    """A client's outbound queue, bounded in ticks rather than items: a replayed run of many
    ticks takes as much room as that many ticks queued one by one."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._ticks = 0

    def _put(self, item: bytes) -> None:
        super()._put(item)
        self._ticks += ticks_in(item)

    def _get(self) -> bytes:
        item = super()._get()
        self._ticks -= ticks_in(item)
        return item

    def qsize(self) -> int:
        return self._ticks


class WsClient:
    """One connected WebSocket: its tokens and chains, and its outbound queue of encoded messages."""

    def __init__(self, queue_max: int, user: dict | None = None, socket: Any = None) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.user = user or {}
        self.socket = socket  # the aiohttp WebSocketResponse, closed by `TickHub.send_away`
        self.tokens: set[int] = set()
        self.chains: set[ChainKey] = set()
        self.orders = False  # subscribed to order updates
        self.queue: asyncio.Queue[bytes] = TickQueue(maxsize=queue_max)
        self.dropped = 0
        self.held: list[bytes] | None = None  # live messages waiting while history is replayed
        self.held_over = False  # some were dropped: the replay cannot be exact

    def offer(self, message: bytes) -> bool:
        if self.held is not None:
            if len(self.held) < self.queue.maxsize * HELD_MAX_FACTOR:
                self.held.append(message)
                return True
            self.held_over = True
            self.dropped += 1
            return False
        try:
            self.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            return False

    def hold(self) -> None:
        """Keep live messages aside (see `release`) while history is replayed to the client."""
        if self.held is None:
            self.held, self.held_over = [], False

    def release(self, replayed: Callable[[bytes], bool]) -> bool:
        """Queue the live messages held aside, but those `replayed` says the replay already sent;
        False when some were dropped while held (the client must be told of a gap)."""
        held, self.held = self.held or [], None
        for message in held:
            if not replayed(message):
                self.offer(message)
        return not self.held_over


def encode_tick(tick: dict) -> bytes:
    """A tick's JSON, encoded once and shared by every client that wants it (senders wrap it)."""
    return orjson.dumps(tick)


def chain_message(doc: dict, position: StreamPosition | None = None, stream: str = CHAIN) -> Whole:
    """A `chain` message as the client receives it."""
    return whole_message("chain", stream, doc, position, (doc.get("underlying"), doc.get("expiry")))


@dataclass(frozen=True, slots=True)
class Route:
    """What a channel carries: its kind (TICKS, CHAIN, ORDERS), its stream's name and history key,
    and the names holding its sequence (a shard's on a sharded bus)."""

    kind: str
    stream: str
    history: str
    names: Names


def routes_of(names: Names, shard: str | None = None) -> dict[str, Route]:
    """Channel -> route for the channels of one shard (None: a tick bus that is not sharded)."""
    n = names if shard is None else names.shard(shard)
    if shard == ORDERS_SHARD:
        return {n.orders: Route(ORDERS, ORDERS, n.orders_history, n)}
    ticks = Route(TICKS, shard_stream(TICKS, shard), n.ticks_history, n)
    out = {n.options: ticks, n.underlying: ticks,
           n.chain: Route(CHAIN, shard_stream(CHAIN, shard), n.chain_history, n)}
    if shard is None:
        out[n.orders] = Route(ORDERS, ORDERS, n.orders_history, n)
    return out


class TickHub:
    def __init__(self, redis: Redis, names: Names, metrics: HttpMetrics, *, queue_max: int,
                 max_clients: int, outages: Outages | None = None, dependency: str = REDIS,
                 cluster_url: str | None = None) -> None:
        """`redis` is the tick bus (`dependency` names it in `outages`). `cluster_url`: the tick bus
        is a Redis Cluster (TICK_REDIS_CLUSTER), `redis` a cluster client of it; the feed follows
        every shard in the directory by sharded pub/sub."""
        self.redis = redis
        self.outages = outages
        self.dependency = dependency  # which of `outages` is `redis`'s
        self.names = names
        self.cluster_url = cluster_url
        self.routes: dict[str, Route] = routes_of(names) if cluster_url is None else routes_of(names, ORDERS_SHARD)
        self._last: dict[str, StreamPosition] = {}  # history key -> the last message routed (to fill in from)
        self.metrics = metrics
        self.queue_max = queue_max
        self.max_clients = max_clients
        self.clients: dict[str, WsClient] = {}
        self.by_token: dict[int, set[WsClient]] = {}
        self.by_chain: dict[ChainKey, set[WsClient]] = {}
        self.by_orders: set[WsClient] = set()
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    # --- clients ----------------------------------------------------------------------------------
    @property
    def full(self) -> bool:
        return len(self.clients) >= self.max_clients

    def connect(self, user: dict | None = None, socket: Any = None) -> WsClient:
        client = WsClient(self.queue_max, user, socket)
        self.clients[client.id] = client
        self.metrics.ws_clients.set(len(self.clients))
        return client

    def disconnect(self, client: WsClient) -> None:
        self.unsubscribe(client, list(client.tokens))
        for key in list(client.chains):
            self.unsubscribe_chain(client, key)
        self.subscribe_orders(client, False)
        self.clients.pop(client.id, None)
        self.metrics.ws_clients.set(len(self.clients))

    def subscribe(self, client: WsClient, tokens: Iterable[int]) -> None:
        for token in tokens:
            client.tokens.add(token)
            self.by_token.setdefault(token, set()).add(client)

    def unsubscribe(self, client: WsClient, tokens: Iterable[int]) -> None:
        for token in tokens:
            client.tokens.discard(token)
            holders = self.by_token.get(token)
            if holders is not None:
                holders.discard(client)
                if not holders:
                    del self.by_token[token]

    def subscribe_chain(self, client: WsClient, key: ChainKey) -> None:
        client.chains.add(key)
        self.by_chain.setdefault(key, set()).add(client)

    def unsubscribe_chain(self, client: WsClient, key: ChainKey) -> None:
        client.chains.discard(key)
        holders = self.by_chain.get(key)
        if holders is not None:
            holders.discard(client)
            if not holders:
                del self.by_chain[key]

    def subscribe_orders(self, client: WsClient, on: bool) -> None:
        client.orders = on
        if on:
            self.by_orders.add(client)
        else:
            self.by_orders.discard(client)

    async def snapshot(self, tokens: list[int]) -> list[bytes]:
        """Latest known tick per token (from the streamer's hash), so a late joiner starts with a price."""
        if not tokens:
            return []
        values = await self.redis.hmget(self.names.latest, [str(t) for t in tokens])
        out = []
        for value in values:
            if value:
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(encode_tick(orjson.loads(value)))  # re-encoded: the hash is not ours to trust
        return out

    # --- the feed ---------------------------------------------------------------------------------
    def route(self, channel: str) -> Route:
        """A channel's route; one the hub does not know is taken for ticks (it never subscribes one)."""
        return self.routes.get(channel) or Route(TICKS, TICKS, self.names.ticks_history, self.names)

    def history_route(self, kind: str, shard: str | None = None) -> Route:
        """The route of a kind's stream: on a sharded bus, `shard`'s (order updates: their own)."""
        if self.cluster_url is None:
            shard = None
        elif kind == ORDERS:
            shard = ORDERS_SHARD
        return next(r for r in routes_of(self.names, shard).values() if r.kind == kind)

    def deliver(self, route: Route, raw: bytes | str) -> int:
        """Route one message of a channel; returns how many messages were queued."""
        if route.kind == CHAIN:
            return self.dispatch_chain(raw, route.stream)
        if route.kind == ORDERS:
            return self.dispatch_orders(raw, route.stream)
        return self.dispatch(raw, route.stream)

    def dispatch(self, raw: bytes | str, stream: str = TICKS) -> int:
        """Route one published batch; returns how many messages were queued."""
        if not self.by_token:
            return 0  # nobody listens: skip parsing entirely
        try:
            ticks, position = unwrap(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValueError):
            self.metrics.ws_feed_errors.labels("bad_payload").inc()
            return 0
        queued = dropped = 0
        for message in stamped_ticks(ticks, position, self.by_token.__contains__, stream):
            for client in self.by_token[message.key]:
                if client.offer(message):
                    queued += 1
                else:
                    dropped += 1
        if dropped:
            self.metrics.ws_dropped.inc(dropped)
        return queued

    def dispatch_chain(self, raw: bytes | str, stream: str = CHAIN) -> int:
        """Route one chain message (see the streamer's chain stage) to the clients of that chain."""
        if not self.by_chain:
            return 0
        try:
            docs, position = unwrap(orjson.loads(raw))
            keys = [(doc["underlying"], doc["expiry"]) for doc in docs]
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
            self.metrics.ws_feed_errors.labels("bad_payload").inc()
            return 0
        queued = 0
        for doc, key in zip(docs, keys, strict=True):
            holders = self.by_chain.get(key)
            if holders:
                queued += self._offer(holders, chain_message(doc, position, stream))
        return queued

    def dispatch_orders(self, raw: bytes | str, stream: str = ORDERS) -> int:
        """Offer one message of order updates to the clients that subscribed to them."""
        if not self.by_orders:
            return 0
        try:
            updates, position = unwrap(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValueError):
            self.metrics.ws_feed_errors.labels("bad_payload").inc()
            return 0
        return self._offer(self.by_orders, whole_message("orders", stream, updates, position))

    def _offer(self, holders: Iterable[WsClient], message: bytes) -> int:
        offered = [client.offer(message) for client in holders]
        if not all(offered):
            self.metrics.ws_dropped.inc(len(offered) - sum(offered))
        return sum(offered)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ws-tick-feed")

    async def wait_ready(self, timeout: float = 5.0) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        return self._ready.is_set()

    async def _run(self) -> None:
        delay, lost_at = RECONNECT_MIN, None
        while True:
            try:
                async for _ in self._listen():  # one pass per connection made
                    if lost_at is not None:
                        log.info("tick feed resubscribed after %.1f s", time.monotonic() - lost_at)
                    delay, lost_at = RECONNECT_MIN, None
            except (RedisError, OSError) as exc:
                self.metrics.ws_feed_errors.labels("redis").inc()
                if lost_at is None:  # the outage itself is logged by the outage watcher
                    log.info("tick feed lost (%s); resubscribing", type(exc).__name__)
                    lost_at = time.monotonic()
                if self.outages is not None:
                    self.outages.suspect(exc)
            except Exception:  # a bug must not silence every client for the rest of the process's life
                self.metrics.ws_feed_errors.labels("internal").inc()
                log.exception("tick feed failed; restarting in %.1f s", delay)
            finally:
                self._ready.clear()
            if self.outages is not None:
                await self.outages.pause(self.dependency, delay)  # cut short when the watcher sees it back
            else:
                await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX, delay * 2)

    async def _listen(self) -> AsyncIterator[None]:
        """Subscribe and route messages until the connection is lost (which raises); yields once
        subscribed. A subscription made again (Redis restarted with its data, a connection reset)
        is first filled in from history, from the last message routed: a connected client misses
        nothing history holds, and gets nothing twice."""
        if self.cluster_url is not None:
            async for _ in self._listen_sharded(self.cluster_url):
                yield None
            return
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(*self.routes)
            pending = len(self.routes)
            while pending:  # confirmed: from here on nothing published is missed
                message = await pubsub.get_message(timeout=SHARDS_READY_SECONDS)
                if message is None:
                    raise ConnectionError("Redis did not confirm the tick feed's subscription")
                if message["type"] == "subscribe":
                    pending -= 1
                self._live(message)
            await self._fill_in(set(self.routes.values()))
            self._ready.set()
            yield None
            async for message in pubsub.listen():
                self._live(message)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def _live(self, message: dict) -> None:
        if message["type"] in ("message", "smessage"):
            route = self.route(_text(message["channel"]))
            if self._fresh(route, message["data"]):
                self.deliver(route, message["data"])

    async def _listen_sharded(self, url: str) -> AsyncIterator[None]:
        """The feed on a sharded bus: every shard the directory names, and those it names later
        (the directory is subscribed before its members are read). Channels subscribed again after
        a failover are filled in from their history like a single Redis's."""
        directory = self.names.shard_directory
        subscriber = ShardSubscriber(url, [directory, *self.routes], name="ticker-web-hub")
        subscriber.start()
        try:
            await subscriber.subscribed(SHARDS_READY_SECONDS)
            for shard in await self.redis.smembers(self.names.shards):
                self._new_shard(subscriber, _text(shard))
            await subscriber.subscribed(SHARDS_READY_SECONDS)
            await self._fill_in(set(self.routes.values()))
            self._ready.set()
            yield None
            async for event in subscriber:
                if isinstance(event, Resubscribed):
                    await self._fill_in({self.route(_text(c)) for c in event.channels if _text(c) in self.routes})
                elif _text(event[0]) == directory:
                    self._new_shard(subscriber, _text(event[1]))
                else:
                    self._live({"type": "smessage", "channel": event[0], "data": event[1]})
        finally:
            await subscriber.aclose()

    def _new_shard(self, subscriber: ShardSubscriber, shard: str) -> None:
        routes = {c: r for c, r in routes_of(self.names, shard).items() if c not in self.routes}
        if routes:
            self.routes.update(routes)
            subscriber.add(routes)

    def _fresh(self, route: Route, data: bytes) -> bool:
        """Note a live message's place in its history (read from the envelope's head, not parsed);
        False when a fill-in routed it already."""
        position = _head(data)
        if position is None:
            return True
        last = self._last.get(route.history)
        try:
            if last is not None and last.epoch == position.epoch and \
                    offset_order(position.offset) <= offset_order(last.offset):
                return False
        except ValueError:  # not an offset of ours: routed (and judged) like any message
            return True
        self._last[route.history] = position
        return True

    async def _fill_in(self, routes: set[Route]) -> None:
        """Route what each history holds after the last message routed from it, while the counts
        go on under the same epoch (else nothing can be said of what was missed)."""
        for route in routes:
            last = self._last.get(route.history)
            if last is None or await tick_history.current_epoch(self.redis, route.names) != last.epoch:
                continue
            filled = 0
            async with contextlib.aclosing(tick_history.pages_after(self.redis, route.history, last.offset)) as pages:
                async for entries in pages:
                    for entry in entries:
                        envelope = b'{"seq":%d,"epoch":"%s","offset":"%s","%s":%s}' % (
                            entry.seq, entry.epoch.encode(), entry.offset.encode(), _ITEMS[route.kind], entry.items)
                        self.deliver(self.routes.get(entry.channel, route), envelope)
                        filled += 1
                    self._last[route.history] = StreamPosition(entries[-1].offset, last.epoch)
            if filled:
                log.info("tick feed filled in %d messages of %s after resubscribing", filled, route.stream)

    async def send_away(self, timeout: float = 5.0) -> None:
        """Close every client's socket with 1001 (going away), so clients reconnect elsewhere."""
        sockets = [c.socket for c in self.clients.values() if c.socket is not None]
        if not sockets:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(s.close(code=1001, message=b"server shutting down") for s in sockets),
                                     return_exceptions=True)

    async def close(self) -> None:
        """Stop the feed task and surface how it ended (it should only ever end by cancellation)."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("tick feed task failed")


_ITEMS = {TICKS: b"ticks", CHAIN: b"chains", ORDERS: b"updates"}  # where an envelope keeps its items


def _head(data: bytes) -> StreamPosition | None:
    """The epoch and offset at the head of an envelope as the sequencing script writes it."""
    epoch_at, offset_at = data.find(b'"epoch":"', 0, 96), data.find(b'"offset":"', 0, 160)
    if epoch_at < 0 or offset_at < 0:
        return None
    epoch = data[epoch_at + 9:data.find(b'"', epoch_at + 9)]
    offset = data[offset_at + 10:data.find(b'"', offset_at + 10)]
    return StreamPosition(offset.decode(), epoch.decode())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
