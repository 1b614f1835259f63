"""The message format of the published channels, as every consumer reads it.

With TICK_MESSAGE_FORMAT=envelope (the default) each message on a channel is one envelope:

    {"seq": 41, "epoch": "1733212800-123456", "offset": "1733212800123-0", "ts": 1733212800123,
     "ticks": [...]}

`seq` counts the messages of that channel (one more per message, shared by every streamer replica),
`epoch` changes whenever the counts restart (Redis lost its data), `offset` is the message's entry
id in its history stream (`Names.ticks_history` for options and underlying, `chain_history`,
`orders_history`) and `ts` its time in epoch milliseconds. The items sit under `ticks` (options,
underlying), `chains` (the chain channel) or `updates` (order updates). With
TICK_MESSAGE_FORMAT=array a message is the bare JSON array of items, as before envelopes existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ITEM_KEYS = ("ticks", "chains", "updates")  # where an envelope keeps its items, per channel kind
TICKS, CHAINS, UPDATES = ITEM_KEYS
MESSAGE_FORMATS = ("envelope", "array")


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a message sits in its history: what a client hands back to resume after it."""

    offset: str
    epoch: str


def unwrap(doc: Any) -> tuple[list, StreamPosition | None]:
    """A parsed message's items and its position (None for a bare array or a bare object)."""
    if isinstance(doc, list):
        return doc, None
    if not isinstance(doc, dict):
        raise ValueError("message is neither an envelope, an array nor an object")
    for key in ITEM_KEYS:
        items = doc.get(key)
        if isinstance(items, list) and "seq" in doc:
            offset, epoch = doc.get("offset"), doc.get("epoch")
            if isinstance(offset, str) and isinstance(epoch, str):
                return items, StreamPosition(offset, epoch)
            return items, None
    return [doc], None


def shard_stream(kind: str, shard: str | None) -> str:
    """A history stream's name as clients know it: its kind (`ticks`, `chain`, `orders`) alone, or
    on a sharded tick bus `<kind>:<shard>` for a shard's ticks and chains (`ticks:NIFTY`), each with
    offsets of its own; order updates are one stream there too."""
    return kind if shard is None or kind == "orders" else f"{kind}:{shard}"


def stream_parts(stream: str) -> tuple[str, str | None]:
    """A stream's kind and shard (None off a sharded bus): `shard_stream` read back."""
    kind, _, shard = stream.partition(":")
    return kind, shard or None


def offset_order(offset: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (`<ms>-<n>`); a malformed one raises ValueError."""
    ms, _, n = offset.partition("-")
    return int(ms), int(n or 0)
