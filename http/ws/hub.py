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
from collections.abc import Callable, Iterable, Iterator
from itertools import compress, repeat
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import Names
from ticker.core.tick_envelope import StreamPosition, unwrap
from ticker.http.dependency_watch import REDIS, Outages
from ticker.http.middleware.observe import HttpMetrics

log = logging.getLogger("ticker.http.ws")

RECONNECT_MIN, RECONNECT_MAX = 0.05, 1.0


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


def stamp_of(position: StreamPosition | None) -> bytes:
    return orjson.dumps({"offset": position.offset, "epoch": position.epoch})[1:-1] if position else b""


def stamped(data: bytes, cls: type[S], stream: str, position: StreamPosition | None, stamp: bytes,
            key: object = None) -> S:
    item = cls(data)
    item.stream, item.key, item.stamp = stream, key, stamp
    item.offset = position.offset if position else ""
    return item


def stamped_ticks(ticks: list, position: StreamPosition | None, wanted: Callable[[int], bool]) -> Iterator[Stamped]:
    """The ticks of one message that `wanted` takes, each encoded once and stamped with the message's
    position (live from the channel, or replayed from history)."""
    stamp = stamp_of(position)
    for tick in ticks:
        if not isinstance(tick, dict):
            continue
        token = tick.get("instrument_token")
        if type(token) is int and wanted(token):
            yield stamped(encode_tick(tick), Stamped, TICKS, position, stamp, token)


def stamped_run(ticks: list, position: StreamPosition | None, wanted: set[int]) -> Stamped | None:
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
    run = stamped(orjson.dumps(keep)[1:-1], Stamped, TICKS, position, stamp_of(position))
    run.ticks = len(keep)
    return run


def whole_message(kind: str, stream: str, data: object, position: StreamPosition | None, key: object = None) -> Whole:
    """A `chain` or `orders` message as the client receives it, with its position when known
    (re-encoded: the channel is not ours to trust)."""
    doc = {"type": kind, "offset": position.offset, "epoch": position.epoch} if position else {"type": kind}
    return stamped(orjson.dumps({**doc, "data": data}), Whole, stream, position, stamp_of(position), key)


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


def chain_message(doc: dict, position: StreamPosition | None = None) -> Whole:
    """A `chain` message as the client receives it."""
    return whole_message("chain", CHAIN, doc, position, (doc.get("underlying"), doc.get("expiry")))


class TickHub:
    def __init__(self, redis: Redis, names: Names, metrics: HttpMetrics, *, queue_max: int,
                 max_clients: int, outages: Outages | None = None) -> None:
        self.redis = redis
        self.outages = outages
        self.names = names
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
    def dispatch(self, raw: bytes | str) -> int:
        """Route one published batch; returns how many messages were queued."""
        if not self.by_token:
            return 0  # nobody listens: skip parsing entirely
        try:
            ticks, position = unwrap(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValueError):
            self.metrics.ws_feed_errors.labels("bad_payload").inc()
            return 0
        queued = dropped = 0
        for message in stamped_ticks(ticks, position, self.by_token.__contains__):
            for client in self.by_token[message.key]:
                if client.offer(message):
                    queued += 1
                else:
                    dropped += 1
        if dropped:
            self.metrics.ws_dropped.inc(dropped)
        return queued

    def dispatch_chain(self, raw: bytes | str) -> int:
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
                queued += self._offer(holders, chain_message(doc, position))
        return queued

    def dispatch_orders(self, raw: bytes | str) -> int:
        """Offer one message of order updates to the clients that subscribed to them."""
        if not self.by_orders:
            return 0
        try:
            updates, position = unwrap(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValueError):
            self.metrics.ws_feed_errors.labels("bad_payload").inc()
            return 0
        return self._offer(self.by_orders, whole_message("orders", ORDERS, updates, position))

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
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.names.options, self.names.underlying, self.names.chain, self.names.orders)
                chain = {self.names.chain, self.names.chain.encode()}  # as the client decodes, or not
                orders = {self.names.orders, self.names.orders.encode()}
                self._ready.set()
                if lost_at is not None:
                    log.info("tick feed resubscribed after %.1f s", time.monotonic() - lost_at)
                delay, lost_at = RECONNECT_MIN, None
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    if message["channel"] in chain:
                        self.dispatch_chain(message["data"])
                    elif message["channel"] in orders:
                        self.dispatch_orders(message["data"])
                    else:
                        self.dispatch(message["data"])
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
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            if self.outages is not None:
                await self.outages.pause(REDIS, delay)  # cut short when the outage watcher sees Redis back
            else:
                await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX, delay * 2)

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
