"""What a `ticker.client` feed yields: one typed event per published message, gap or snapshot.

A message's `offset` and `epoch` are its place in its history stream (`core/tick_envelope.py`);
`positions` of a feed keep the last of each stream, which is all a later feed needs to resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ticker.core.tick_envelope import StreamPosition, offset_order, stream_parts

# The streams a feed follows, named as `/ws/ticks` names them in its `gap` messages.
TICK_STREAM, CHAIN_STREAM, ORDER_STREAM = "ticks", "chain", "orders"


@dataclass(frozen=True, slots=True)
class PublishedItems:
    """The items of one published message, at its place in its stream's history (None for a bare
    array); `seq` counts the channel's messages (`/ws/ticks` does not pass it on)."""

    items: list[dict[str, Any]]
    offset: str | None
    epoch: str | None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class TickBatch(PublishedItems):
    """The ticks of one published message (only those of the feed's tokens, when it has some)."""

    channel: str | None = None  # the Redis channel (options or underlying); None over `/ws/ticks`


@dataclass(frozen=True, slots=True)
class OrderUpdates(PublishedItems):
    """The order updates of one published message, as Kite reported them."""


@dataclass(frozen=True, slots=True)
class ChainUpdates(PublishedItems):
    """The chain documents of one published message (figures and the rows that changed)."""


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Messages of `stream` after `from_offset` that cannot be delivered: history lost them up to
    (not including) `to_offset`, its oldest offset (None when it holds nothing). `reason` is
    `trimmed` (older than the history), `epoch_changed` (the counts restarted: Redis lost its data),
    `history_off` (bare arrays are published) or `overflow` (the server gave up on a slow reader).
    What stands in for the lost messages follows: a `Snapshot` of the latest ticks, or for orders
    every update history still holds."""

    stream: str
    from_offset: str | None
    to_offset: str | None
    reason: str
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest tick of each instrument (the streamer's latest-tick hash), sent after a gap."""

    stream: str
    items: list[dict[str, Any]]


FeedEvent = TickBatch | OrderUpdates | ChainUpdates | StreamGap | Snapshot


def stream_kind(stream: str) -> str:
    """TICK_STREAM, CHAIN_STREAM or ORDER_STREAM: a sharded tick bus names a shard's stream
    `<kind>:<shard>` (`ticks:NIFTY`), each with its own positions."""
    return stream_parts(stream)[0]


def published(stream: str, items: list[dict[str, Any]], offset: str | None, epoch: str | None,
              seq: int | None = None, channel: str | None = None) -> FeedEvent:
    """The event for one published message of `stream`."""
    kind = stream_kind(stream)
    if kind == TICK_STREAM:
        return TickBatch(items, offset, epoch, seq, channel)
    return OrderUpdates(items, offset, epoch, seq) if kind == ORDER_STREAM else ChainUpdates(items, offset, epoch, seq)


def delivered(last: StreamPosition | None, position: StreamPosition) -> bool:
    """Whether a message at `position` was delivered already, the stream's last being `last`. One
    of another epoch is new: the counts restarted (Redis lost or flushed its data)."""
    return last is not None and last.epoch == position.epoch and \
        offset_order(position.offset) <= offset_order(last.offset)
