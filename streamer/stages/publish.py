"""Publish one flush to Redis in one pipeline (packed by infra/stores/redis_fast.py), behind a circuit breaker.
Sending and reading the replies are separate steps (`send`, `settle`) so the outbox can write
the next flush on the same connection while Redis still answers the last one.

Per flush: a message on `<prefix>:options` and `<prefix>:underlying` (at most TICK_BATCH_MAX_SIZE
ticks each), one on `<prefix>:orders` with the flush's order postbacks, and HSET the latest-tick
snapshot fields that are due into `<prefix>:latest` for late joiners; one message on `<prefix>:chain`
with the option chains that are due. Each message is an envelope sent by the sequencing script
(`infra/stores/tick_history.py`: seq, epoch, history stream, PUBLISH), loaded once per connection at
the head of the pipeline; TICK_MESSAGE_FORMAT=array publishes bare arrays instead (one PUBLISH per
postback and per chain, as before envelopes). HSETNX the day's opening OIs first seen and HSET
each published chain's ATM IV as the day's (`<prefix>:atm_iv:<underlying>:<expiry>`). A failure or a
flush slower than the publish timeout trips the breaker; while it is open flushes are dropped and
counted, and it probes again by itself with growing, jittered, capped pauses. Outages are told to
the shared `RedisLink` (logged once each way). Nothing here ever raises into the outbox, not
even an unexpected error of the Redis client (it is logged, and costs that flush).

On a Redis Cluster (TICK_REDIS_CLUSTER) every message goes to its shard: ticks and chains to their
underlying's channels (`Names.shard`, hash-tagged, so a shard's channel, history stream and
sequence share one slot), order updates to the orders shard, by SPUBLISH; each shard in a flush is
named in the directory (`tick_history.ANNOUNCE`); the flush is written as one pipeline per master
(`redis_routes.ClusterRoute`), which follows a failover by reading the slot map again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import ORDERS_SHARD, Names
from ticker.infra.runtime.throttle import Throttle
from ticker.infra.stores import redis_fast, tick_history
from ticker.infra.stores.redis_routes import ClusterRoute, Routed, SingleRoute, Ticket
from ticker.streamer.process.stream_metrics import StreamerMetrics
from ticker.streamer.redis_link import RedisLink
from ticker.streamer.stages.publish_breaker import STATE_CODES, PublishBreaker
from ticker.streamer.stages.render import Outgoing

log = logging.getLogger(__name__)
_EXPECTED = (RedisError, OSError, TimeoutError)  # what a Redis outage raises
OI_OPEN_TTL = 3 * 86_400  # a day's opening OIs outlive the day (a weekend's reads), then go
ATM_IV_TTL = 400 * 86_400  # a chain's daily ATM IVs, kept a while past the longest-dated expiry's life


def chunked(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(slots=True)
class Flight:
    """One flush on its way: written (or dropped) by `Publisher.send`, settled in order."""

    out: Outgoing
    started: float  # perf_counter at send
    deadline: float  # loop time by which its replies must be in
    began: float = 0.0  # RedisLink.now() at send
    status: str = "sent"  # sent | empty | dropped | failed
    probing: bool = False
    ticket: Ticket | None = None  # where it was written (see redis_routes)


class Publisher:
    def __init__(self, redis: Redis | None, names: Names, breaker: PublishBreaker, metrics: StreamerMetrics,
                 *, batch_max: int, timeout: float, link: RedisLink | None = None, envelope: bool = True,
                 history_seconds: int = 300, cluster_url: str | None = None) -> None:
        """`cluster_url`: the tick bus is the Redis Cluster that URL names a node of (then `redis`
        is unused): every message goes to its shard's channel (`Names.shard`), sharded pub/sub."""
        self.link = link or RedisLink()
        self.names = names
        self.breaker = breaker
        self.metrics = metrics
        self.batch_max = batch_max
        self.timeout = timeout
        self.published_total = 0  # ticks (not bars or postbacks) that reached Redis
        self.envelope = envelope  # sequenced envelopes with history (tick_history.py), or bare arrays
        self.sharded = cluster_url is not None
        self.history_seconds = history_seconds
        source, self._sha = tick_history.script(self.sharded)
        preamble = [redis_fast.command(b"SCRIPT", b"LOAD", s) for s in (source, tick_history.ANNOUNCE)]
        if cluster_url is not None:
            self._route: SingleRoute | ClusterRoute = ClusterRoute(cluster_url, preamble, name="ticker-streamer")
        elif redis is not None:
            self._route = SingleRoute(redis, preamble[:1] if envelope else [])
        else:
            raise ValueError("a publisher needs a Redis client or a cluster URL")
        self._verb = b"SPUBLISH" if self.sharded else b"PUBLISH"
        self._latest = names.latest.encode()
        self._shards: dict[str, Names] = {}  # tag -> its names; bounded by the underlyings streamed
        self._calls: dict[str, tuple[list[bytes], list[bytes]]] = {}  # channel -> script keys, args
        self._throttle = Throttle()

    async def publish(self, out: Outgoing) -> bool:
        """Send one flush and wait for its replies: True when it reached Redis (or there was
        nothing to send)."""
        return await self.settle(await self.send(out))

    async def send(self, out: Outgoing) -> Flight:
        """Write one flush's pipeline without waiting for its replies; `settle` reads them.
        Flights must be settled in the order they were sent."""
        flight = Flight(out, time.perf_counter(), asyncio.get_running_loop().time() + self.timeout,
                        self.link.now())
        if out.ticks == 0 and not out.orders and not out.bars and not out.latest and not out.chains.busy:
            flight.status = "empty"
            return flight
        if not self.breaker.allow():
            self._dropped(out, "redis_unavailable")
            flight.status = "dropped"
            return flight
        flight.probing = self.breaker.state == "half_open"
        try:
            routed = self._pipeline(out)
            async with asyncio.timeout_at(flight.deadline):
                flight.ticket = await self._route.write(routed)
        except Exception as exc:  # see _failed: nothing may raise into the outbox
            self._failed(flight, exc)
        return flight

    async def settle(self, flight: Flight) -> bool:
        """Read a sent flight's replies (by its deadline) and account for it."""
        if flight.status != "sent":
            return flight.status == "empty"
        ticket = flight.ticket or Ticket()
        if not self._route.current(ticket):  # an earlier flight failed and took a socket down
            self._failed(flight, None)
            return False
        try:
            async with asyncio.timeout_at(flight.deadline):
                await self._route.read(ticket)
        except Exception as exc:  # see _failed
            await self._route.reset(ticket)
            self._failed(flight, exc)
            return False
        self.breaker.success()
        self._state()
        self.link.ok("publisher", flight.began)
        out = flight.out
        self.metrics.publish_seconds.observe(time.perf_counter() - flight.started)
        self.published_total += out.ticks
        self.metrics.published.labels("options").inc(len(out.options))
        self.metrics.published.labels("underlying").inc(len(out.underlying))
        self.metrics.published.labels("bars").inc(len(out.bars))
        self.metrics.published.labels("chain").inc(len(out.chains.messages))
        self.metrics.orders.inc(len(out.orders))
        self.metrics.snapshot_fields.inc(len(out.latest))
        return True

    async def close(self) -> None:
        await self._route.close()

    def _failed(self, flight: Flight, exc: BaseException | None) -> None:
        """A flush that did not reach Redis: dropped and counted. An error a Redis outage does not
        explain (a client bug, a reply we cannot parse) is logged with its traceback, throttled."""
        flight.status = "failed"
        self.breaker.failure()
        self._dropped(flight.out, "redis_error")
        self._state()
        if exc is None:
            return
        self.link.failed("publisher", exc, since=self._route.taken_at)
        if not isinstance(exc, _EXPECTED):
            self.metrics.stage_failures.labels("publish").inc()
            held = self._throttle.allow(type(exc).__name__)
            if held is not None:
                log.error("publishing a flush failed unexpectedly; dropped it", exc_info=exc,
                          extra={"ticks": flight.out.ticks, "failures_not_logged": held})

    def _pipeline(self, out: Outgoing) -> list[Routed]:
        routed: list[Routed] = []
        tags: set[str] = set()
        for tag, items in _by_shard(out.options, out.option_shards):
            names = self._shard(tag, tags)
            routed += [self._message(names, names.options, part) for part in chunked(items, self.batch_max)]
        for tag, items in _by_shard(out.underlying + out.bars, out.underlying_shards):
            names = self._shard(tag, tags)
            routed += [self._message(names, names.underlying, part) for part in chunked(items, self.batch_max)]
        if out.orders:
            names = self._shard(ORDERS_SHARD if self.sharded else None, tags)
            routed += self._documents(names, names.orders, out.orders)
        if out.latest:
            routed.append((self._latest, redis_fast.hset(self._latest, out.latest)))
        routed += self._chains(out, tags)
        return self._announce(tags) + routed

    def _shard(self, tag: str | None, seen: set[str]) -> Names:
        """The names a shard's messages go by (on a bus that is not sharded, the one set of names)."""
        if tag is None:
            return self.names
        seen.add(tag)
        names = self._shards.get(tag)
        if names is None:
            names = self._shards[tag] = self.names.shard(tag)
        return names

    def _message(self, names: Names, channel: str, items: list[bytes]) -> Routed:
        """One message on a channel of `names`: an envelope through the sequencing script, or a bare array."""
        key = channel.encode()
        if not self.envelope:
            return key, redis_fast.publish_array(key, items, self._verb)
        call = self._calls.get(channel)
        if call is None:
            keys, args = tick_history.script_call(names, channel, self.history_seconds)
            call = self._calls[channel] = ([k.encode() for k in keys], [a.encode() for a in args])
        return key, redis_fast.script_array(self._sha, call[0], call[1], items)

    def _documents(self, names: Names, channel: str, docs: list[bytes]) -> list[Routed]:
        """Order updates and chains: one envelope for all of a flush's, or a message each (arrays)."""
        if self.envelope:
            return [self._message(names, channel, docs)]
        key = channel.encode()
        return [(key, redis_fast.command(self._verb, key, doc)) for doc in docs]

    def _announce(self, tags: set[str]) -> list[Routed]:
        """On a sharded bus, every shard in the flush is named in the directory (told once, when new)."""
        if not self.sharded:
            return []
        members, directory = self.names.shards.encode(), self.names.shard_directory.encode()
        return [(members, redis_fast.command(b"EVALSHA", tick_history.ANNOUNCE_SHA, b"2", members, directory,
                                             tag.encode())) for tag in sorted(tags)]

    def _chains(self, out: Outgoing, tags: set[str]) -> list[Routed]:
        chains = out.chains
        routed: list[Routed] = []
        for tag, docs in _by_shard(chains.messages, chains.shards if self.sharded else None):
            names = self._shard(tag, tags)
            routed += self._documents(names, names.chain, docs)
        if chains.oi_open:  # the first one written stands: a restart must not move the day's open
            key = self.names.oi_open(chains.day).encode()
            routed += [(key, redis_fast.command(b"HSETNX", key, token, oi)) for token, oi in chains.oi_open.items()]
            routed.append((key, redis_fast.command(b"EXPIRE", key, b"%d" % OI_OPEN_TTL)))
        day = chains.day.encode()
        for (underlying, expiry), iv in chains.atm_iv.items():  # the day's last one stands
            key = self.names.atm_iv(underlying, expiry).encode()
            routed.append((key, redis_fast.command(b"HSET", key, day, repr(iv).encode())))
            routed.append((key, redis_fast.command(b"EXPIRE", key, b"%d" % ATM_IV_TTL)))
        return routed

    def _dropped(self, out: Outgoing, reason: str) -> None:
        self.metrics.dropped.labels(reason).inc(out.ticks)
        if out.orders:
            self.metrics.dropped.labels(f"orders_{reason}").inc(len(out.orders))

    def _state(self) -> None:
        self.metrics.breaker_state.set(STATE_CODES[self.breaker.state])


def _by_shard(items: list[bytes], shards: list[str] | None) -> list[tuple[str | None, list[bytes]]]:
    """Items grouped by shard, each group in the items' order; one group (None) when not sharded."""
    if shards is None:
        return [(None, items)] if items else []
    groups: defaultdict[str, list[bytes]] = defaultdict(list)  # no empty list made per item, as setdefault would
    for item, tag in zip(items, shards, strict=True):
        groups[tag].append(item)
    return list(groups.items())
