"""What a `ticker.client` feed yields: one typed event per published message, gap or snapshot.

A message's `offset` and `epoch` are its place in its history stream (`core/tick_envelope.py`);
`positions` of a feed keep the last of each stream, which is all a later feed needs to resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The streams a feed follows, named as `/ws/ticks` names them in its `gap` messages.
TICK_STREAM, CHAIN_STREAM, ORDER_STREAM = "ticks", "chain", "orders"


@dataclass(frozen=True, slots=True)
class TickBatch:
    """The ticks of one published message (only those of the feed's tokens, when it has some)."""

    items: list[dict[str, Any]]
    offset: str | None
    epoch: str | None
    seq: int | None = None  # the channel's message count; `/ws/ticks` does not pass it on
    channel: str | None = None  # the Redis channel (options or underlying); None over `/ws/ticks`


@dataclass(frozen=True, slots=True)
class OrderUpdates:
    """The order updates of one published message, as Kite reported them."""

    items: list[dict[str, Any]]
    offset: str | None
    epoch: str | None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class ChainUpdates:
    """The chain documents of one published message (figures and the rows that changed)."""

    items: list[dict[str, Any]]
    offset: str | None
    epoch: str | None
    seq: int | None = None


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
