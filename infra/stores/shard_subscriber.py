"""Sharded pub/sub (SSUBSCRIBE, Redis >= 7) over a Redis Cluster, which redis-py's asyncio client
cannot do: it has no cluster pub/sub and its PubSub does not parse `smessage`.

`ShardSubscriber(seed_url, channels)` keeps one connection per master that owns some of the
channels (`ClusterMap` says which) and sends one SSUBSCRIBE per slot there (a command's channels
must share a slot). `await get_message(timeout)` or `async for event in sub` gives
`(channel, data)` for each message and, when channels were lost and are subscribed again, a
`Resubscribed(channels, lost_at)` marker, queued before any message of the new subscription: a
consumer replays what it missed from the channel's history (stream entries after its last one).

Channels are lost when their node's connection breaks (a killed master: the kernel resets it; a
silent one: no answer to a PING after `health_interval` of quiet), when the node sends
`sunsubscribe` itself (its slots moved, or it was demoted to replica), or when SSUBSCRIBE is refused
(MOVED, CLUSTERDOWN during a failover). Lost channels go back to `pending`; the supervisor reads
the slot map again and subscribes them at their owner, backing off (`Outage`: capped jittered
back-off, one warning when subscribing first fails and one line when it works again).

Bounded: every connect, write and map read times out; the queue holds `queue_size` events, and a
reader blocked on a full queue leaves the messages to Redis, whose pub/sub output-buffer limit
drops a subscriber that falls too far behind (it is then resubscribed, with a marker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from ticker.infra.runtime.outage import Outage, Wording
from ticker.infra.stores.cluster_map import Address, ClusterMap, ClusterUnavailable, key_slot

__all__ = ["Event", "Message", "Resubscribed", "ShardSubscriber"]

log = logging.getLogger(__name__)

WORDING = Wording(down="Redis Cluster shard subscription failed{while_doing} ({error}); resubscribing with "
                       "back-off", up="Redis Cluster shard subscriptions restored after {seconds:.1f} s",
                  detail=True)

Message = tuple[bytes, bytes]  # (channel, data)


@dataclass(frozen=True, slots=True)
class Resubscribed:
    """`channels` were lost at `lost_at` (time.time(), the earliest of them) and are subscribed
    again: messages published in between were not received."""

    channels: tuple[bytes, ...]
    lost_at: float


Event = Message | Resubscribed
_CLOSED = object()


@dataclass(eq=False)
class _Group:
    """One SSUBSCRIBE sent (one slot's channels), until the node confirms each channel."""

    channels: tuple[bytes, ...]
    lost_at: float | None  # None: a first subscription, nothing to replay
    waiting: set[bytes] = field(default_factory=set)


@dataclass(eq=False)
class _Link:
    address: Address
    conn: AbstractConnection
    active: set[bytes] = field(default_factory=set)
    groups: deque[_Group] = field(default_factory=deque)  # sent, in order, not yet fully confirmed
    reader: asyncio.Task[None] | None = None
    ping_sent: bool = False
    closed: bool = False


class ShardSubscriber:
    def __init__(self, seed_url: str, channels: Iterable[bytes | str], *, queue_size: int = 10_000,
                 timeout: float = 3.0, health_interval: float = 5.0, outage: Outage | None = None,
                 name: str | None = None) -> None:
        self.channels = frozenset(c.encode() if isinstance(c, str) else c for c in channels)
        self.map = ClusterMap(seed_url, timeout=timeout)
        self.resubscriptions = 0  # markers queued
        self._timeout, self._health, self._name = timeout, health_interval, name
        self._outage = outage or Outage("redis cluster", max_delay=1.0, logger=log, wording=WORDING)
        self._queue: asyncio.Queue[object] = asyncio.Queue(queue_size)
        self._pending: dict[bytes, float | None] = dict.fromkeys(self.channels)  # channel -> lost_at
        self._links: dict[Address, _Link] = {}
        self._wake, self._ready = asyncio.Event(), asyncio.Event()
        self._delay = 0.0  # back-off before the next try, after a failure
        self._ask_first: Address | None = None  # a node that knows the slot map's latest change
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False

    # -- consuming ------------------------------------------------------------------------------

    @property
    def connected(self) -> set[Address]:
        """The nodes a connection is held to (the masters of the channels, once subscribed)."""
        return set(self._links)

    def start(self) -> None:
        """Begin subscribing (in the background; `ready` says when every channel is)."""
        if not self.channels:
            self._ready.set()
        if self._supervisor is None:
            self._wake.set()
            self._supervisor = asyncio.create_task(self._supervise(), name="shard-subscriber")

    def add(self, channels: Iterable[bytes | str]) -> None:
        """Subscribe more channels (a shard new to the directory), at their owners, in the
        background like the first ones: `ready` is false until they are confirmed."""
        new = {c.encode() if isinstance(c, str) else c for c in channels} - self.channels
        if new:
            self.channels = self.channels | new
            self._lose(dict.fromkeys(new))

    async def ready(self, timeout: float) -> bool:
        """Whether every channel is subscribed, waiting up to `timeout` seconds for it."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        return self._ready.is_set()

    async def subscribed(self, timeout: float) -> None:
        """Wait until every channel is subscribed; ConnectionError (a Redis outage to its callers)
        when the cluster has not confirmed them within `timeout` seconds."""
        if not await self.ready(timeout):
            raise ConnectionError("the Redis Cluster did not confirm the shard subscriptions")

    async def get_message(self, timeout: float | None = None) -> Event | None:
        """The next message or marker; None after `timeout` seconds without one, or once closed."""
        try:
            async with asyncio.timeout(timeout):
                event = await self._queue.get()
        except TimeoutError:
            return None
        if event is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # for any other waiter
            return None
        return event  # type: ignore[return-value]

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while (event := await self.get_message()) is not None:
            yield event

    async def aclose(self) -> None:
        # The loops also stop on flags: a cancellation meeting a read's own timeout may be taken
        # for that timeout by redis-py, and a loop that only heeded the cancel would read on.
        self._closed = True
        self._wake.set()
        links = list(self._links.values())
        for link in links:
            link.closed = True
        tasks = [t for t in [self._supervisor, *(link.reader for link in links)] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2 * self._timeout + self._health)
        for link in links:
            await link.conn.disconnect(nowait=True)
        self._links.clear()
        while self._queue.full():  # make room for the end marker: nobody reads what is left
            self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)

    async def __aenter__(self) -> ShardSubscriber:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- subscribing ----------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            if self._delay:
                delay, self._delay = self._delay, 0.0
                await asyncio.sleep(delay)  # back-off after a failure (the wake-up may repeat it)
            if self._pending:
                try:
                    await self._subscribe_pending()
                except (OSError, RedisError) as exc:  # ClusterUnavailable is an OSError
                    self._failed(exc, "reading the slot map")
                except Exception as exc:  # a bug must not end the subscriptions for good
                    log.exception("shard subscriber: unexpected error, retrying")
                    self._failed(exc, "subscribing")
            await self._close_idle_links()

    async def _subscribe_pending(self) -> None:
        ask_first, self._ask_first = self._ask_first, None
        await self.map.refresh(ask_first)
        by_owner: dict[Address, dict[int, list[bytes]]] = {}
        for channel in self._pending:
            slot = key_slot(channel)
            owner = self.map.master_for_slot(slot)
            if owner is None:
                raise ClusterUnavailable(f"no master serves slot {slot}")
            by_owner.setdefault(owner, {}).setdefault(slot, []).append(channel)
        for address, slots in by_owner.items():
            try:
                link = await self._link(address)
            except (OSError, RedisError) as exc:
                self._failed(exc, "connecting")
                continue
            await self._send(link, slots)

    async def _link(self, address: Address) -> _Link:
        link = self._links.get(address)
        if link is not None:
            return link
        conn = self.map.node_connection(address, client_name=self._name, protocol=2)  # pushes as RESP2 arrays
        await conn.connect()
        link = self._links[address] = _Link(address, conn)
        link.reader = asyncio.create_task(self._read(link), name=f"shard-reader-{address[1]}")
        return link

    async def _send(self, link: _Link, slots: dict[int, list[bytes]]) -> None:
        """SSUBSCRIBE each slot's channels, in one write; the reader matches the replies."""
        commands = []
        for channels in slots.values():
            lost = [self._pending.pop(c) for c in channels]
            times = [t for t in lost if t is not None]
            link.groups.append(_Group(tuple(channels), min(times) if times else None, set(channels)))
            commands.append(("SSUBSCRIBE", *channels))
        try:
            await link.conn.send_packed_command(link.conn.pack_commands(commands), check_health=False)
        except (OSError, RedisError) as exc:
            await self._drop(link, exc)

    async def _close_idle_links(self) -> None:
        """A node left with no channel (its slots moved) is let go."""
        for link in list(self._links.values()):
            if not link.active and not link.groups:
                await self._close(link)

    async def _close(self, link: _Link) -> None:
        link.closed = True
        if self._links.get(link.address) is link:
            del self._links[link.address]
        if link.reader is not None and link.reader is not asyncio.current_task():
            link.reader.cancel()
        await link.conn.disconnect(nowait=True)

    # -- reading one node -----------------------------------------------------------------------

    async def _read(self, link: _Link) -> None:
        try:
            while not link.closed:
                try:
                    reply = await link.conn.read_response(timeout=self._health, disconnect_on_error=False)
                except ResponseError as exc:  # the oldest SSUBSCRIBE not yet confirmed was refused
                    self._refused(link, exc)
                    continue
                if reply is None:  # quiet for `health_interval`: is the node still there?
                    if link.ping_sent:
                        raise TimeoutError(f"no answer to PING from {link.address[0]}:{link.address[1]}")
                    await link.conn.send_command("PING", check_health=False)
                    link.ping_sent = True
                    continue
                link.ping_sent = False
                await self._handle(link, reply)
        except (OSError, RedisError) as exc:
            await self._drop(link, exc)
        except Exception as exc:  # a bug: the channels must still be taken up again
            log.exception("shard subscriber: unexpected error reading from a node")
            await self._drop(link, exc)

    async def _handle(self, link: _Link, reply: object) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            return  # a PONG outside subscribed mode
        kind, channel = reply[0], reply[1]
        if kind == b"smessage":
            await self._queue.put((channel, reply[2]))
        elif kind == b"ssubscribe":
            await self._confirmed(link, channel)
        elif kind == b"sunsubscribe":  # the node gave up the channel's slot: it is served elsewhere now
            link.active.discard(channel)
            self._ask_first = link.address  # it knows where (a replica would still take the channel)
            self._lose({channel: time.time()})

    async def _confirmed(self, link: _Link, channel: bytes) -> None:
        group = next((g for g in link.groups if channel in g.waiting), None)
        if group is None:
            return
        group.waiting.discard(channel)
        if group.waiting:
            return
        link.groups.remove(group)
        link.active.update(group.channels)
        self._outage.ok()
        if group.lost_at is not None:
            self.resubscriptions += 1
            await self._queue.put(Resubscribed(group.channels, group.lost_at))
        if not self._pending and all(not lk.groups for lk in self._links.values()):
            self._ready.set()

    # -- losing channels ------------------------------------------------------------------------

    def _refused(self, link: _Link, exc: ResponseError) -> None:
        moved = str(exc).split()  # MOVED <slot> <host>:<port>: ask the new owner for the map
        if len(moved) == 3 and moved[0] == "MOVED":
            host, _, port = moved[2].rpartition(":")
            if port.isdigit():
                self._ask_first = (host or link.address[0], int(port))
        group = link.groups.popleft() if link.groups else None
        if group is not None:  # a refused command subscribed none of its channels
            self._lose(dict.fromkeys(group.channels, group.lost_at))
        self._failed(exc, "subscribing")

    async def _drop(self, link: _Link, exc: BaseException) -> None:
        """The node's connection is gone: every channel on it is lost now (or still not subscribed)."""
        if self._links.get(link.address) is not link:
            return  # already dropped
        await self._close(link)
        now = time.time()
        lost: dict[bytes, float | None] = dict.fromkeys(link.active, now)
        for group in link.groups:  # all of a group: those it confirmed are not active yet either
            lost.update(dict.fromkeys(group.channels, group.lost_at))
        link.active.clear()
        link.groups.clear()
        self._lose(lost)
        self._failed(exc, "reading")

    def _lose(self, lost: dict[bytes, float | None]) -> None:
        if self._closed or not lost:
            return
        for channel, at in lost.items():
            earlier = self._pending.get(channel)
            self._pending[channel] = at if earlier is None else min(earlier, at or earlier)
        self._ready.clear()
        self._wake.set()

    def _failed(self, exc: BaseException, doing: str) -> None:
        if not self._closed:
            self._delay = max(self._delay, self._outage.failed(exc, doing))
            self._wake.set()
