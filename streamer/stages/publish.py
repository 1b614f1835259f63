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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import Names
from ticker.infra.runtime.throttle import Throttle
from ticker.infra.stores import redis_fast, tick_history
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
    replies: int = 0
    epoch: int = -1


class Publisher:
    def __init__(self, redis: Redis, names: Names, breaker: PublishBreaker, metrics: StreamerMetrics,
                 *, batch_max: int, timeout: float, link: RedisLink | None = None, envelope: bool = True,
                 history_seconds: int = 300) -> None:
        self.redis = redis
        self.link = link or RedisLink()
        self.names = names
        self.breaker = breaker
        self.metrics = metrics
        self.batch_max = batch_max
        self.timeout = timeout
        self.published_total = 0  # ticks (not bars or postbacks) that reached Redis
        self._options, self._underlying = names.options.encode(), names.underlying.encode()
        self._orders, self._latest = names.orders.encode(), names.latest.encode()
        self._chain = names.chain.encode()
        self.envelope = envelope  # sequenced envelopes with history (tick_history.py), or bare arrays
        self._calls = {channel.encode(): tuple([a.encode() for a in part]
                                               for part in tick_history.script_call(names, channel, history_seconds))
                       for channel in (names.options, names.underlying, names.orders, names.chain)}
        self._lane = redis_fast.Lane(redis)
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
            packed = self._pipeline(out)
            flight.replies = len(packed)
            async with asyncio.timeout_at(flight.deadline):
                flight.epoch = await self._lane.write(packed)
        except Exception as exc:  # see _failed: nothing may raise into the outbox
            self._failed(flight, exc)
        return flight

    async def settle(self, flight: Flight) -> bool:
        """Read a sent flight's replies (by its deadline) and account for it."""
        if flight.status != "sent":
            return flight.status == "empty"
        if flight.epoch != self._lane.epoch:  # an earlier flight failed and took the socket down
            self._failed(flight, None)
            return False
        try:
            async with asyncio.timeout_at(flight.deadline):
                await self._lane.read(flight.replies)
        except Exception as exc:  # see _failed
            if flight.epoch == self._lane.epoch:
                await self._lane.reset()
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
        await self._lane.close()

    def _failed(self, flight: Flight, exc: BaseException | None) -> None:
        """A flush that did not reach Redis: dropped and counted. An error a Redis outage does not
        explain (a client bug, a reply we cannot parse) is logged with its traceback, throttled."""
        flight.status = "failed"
        self.breaker.failure()
        self._dropped(flight.out, "redis_error")
        self._state()
        if exc is None:
            return
        self.link.failed("publisher", exc, since=self._lane.taken_at)
        if not isinstance(exc, _EXPECTED):
            self.metrics.stage_failures.labels("publish").inc()
            held = self._throttle.allow(type(exc).__name__)
            if held is not None:
                log.error("publishing a flush failed unexpectedly; dropped it", exc_info=exc,
                          extra={"ticks": flight.out.ticks, "failures_not_logged": held})

    def _pipeline(self, out: Outgoing) -> list[redis_fast.Packed]:
        packed = self._script() if self.envelope else []
        packed += [self._message(self._options, part) for part in chunked(out.options, self.batch_max)]
        packed += [self._message(self._underlying, part) for part in chunked(out.underlying + out.bars, self.batch_max)]
        if out.orders:
            packed += ([self._message(self._orders, out.orders)] if self.envelope
                       else [redis_fast.command(b"PUBLISH", self._orders, doc) for doc in out.orders])
        if out.latest:
            packed.append(redis_fast.hset(self._latest, out.latest))
        return packed + self._chains(out)

    def _script(self) -> list[redis_fast.Packed]:
        """SCRIPT LOAD at the head of the first flush on each connection the lane takes: a Redis
        restarted (or flushed of scripts) costs the lane its connection, so the next one loads it
        again before its first EVALSHA."""
        if self._lane.holding:  # written on the connection this flush goes out on
            return []
        return [redis_fast.command(b"SCRIPT", b"LOAD", tick_history.SEQUENCED)]

    def _message(self, channel: bytes, items: list[bytes]) -> redis_fast.Packed:
        """One channel message: an envelope through the sequencing script, or a bare array."""
        if not self.envelope:
            return redis_fast.publish_array(channel, items)
        keys, args = self._calls[channel]
        return redis_fast.script_array(tick_history.SEQUENCED_SHA, keys, args, items)

    def _chains(self, out: Outgoing) -> list[redis_fast.Packed]:
        chains = out.chains
        if not chains.messages:
            packed = []
        elif self.envelope:  # one envelope for every chain due in this flush
            packed = [self._message(self._chain, chains.messages)]
        else:
            packed = [redis_fast.command(b"PUBLISH", self._chain, doc) for doc in chains.messages]
        if chains.oi_open:  # the first one written stands: a restart must not move the day's open
            key = self.names.oi_open(chains.day).encode()
            packed += [redis_fast.command(b"HSETNX", key, token, oi) for token, oi in chains.oi_open.items()]
            packed.append(redis_fast.command(b"EXPIRE", key, b"%d" % OI_OPEN_TTL))
        day = chains.day.encode()
        for (underlying, expiry), iv in chains.atm_iv.items():  # the day's last one stands
            key = self.names.atm_iv(underlying, expiry).encode()
            packed.append(redis_fast.command(b"HSET", key, day, repr(iv).encode()))
            packed.append(redis_fast.command(b"EXPIRE", key, b"%d" % ATM_IV_TTL))
        return packed

    def _dropped(self, out: Outgoing, reason: str) -> None:
        self.metrics.dropped.labels(reason).inc(out.ticks)
        if out.orders:
            self.metrics.dropped.labels(f"orders_{reason}").inc(len(out.orders))

    def _state(self) -> None:
        self.metrics.breaker_state.set(STATE_CODES[self.breaker.state])
