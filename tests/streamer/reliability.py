"""Reliability measurements shared by the end-to-end test and the bench (tests/bench/bench_reliability.py):

- `lost_to_bad_frames`: while the stand-in streams good ticks, send bad frames through its
  `POST /_sim/ws/inject` and compare what reached Redis with what was sent: every good tick of the
  stand-in (recorded at the source by its engine's tap) and every good packet riding in a bad
  frame must be published; only the bad packets may be lost, each counted once as dropped,
  reason `malformed`.
- `publishing_again_after`: how long after a killed Redis is back the streamer publishes again.

Ticks are matched by identity (token, price in paise, exchange timestamp), as multisets, so a
tick in flight at either end of the window never counts as lost or found.
"""

from __future__ import annotations

import asyncio
import inspect
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import numpy as np

from ticker.core.wire import Ticks, encode

Key = tuple[int, int, int | None]  # token, price in paise, exchange timestamp (None when not carried)
BOUND = 60.0


def tick_keys(ticks: Ticks) -> list[Key]:
    ts = ticks.exchange_timestamp.tolist()
    return [(tok, round(price * 100), t or None)
            for tok, price, t in zip(ticks.token.tolist(), ticks.last_price.tolist(), ts, strict=True)]


def doc_key(doc: dict) -> Key:
    stamp = doc.get("exchange_timestamp")
    ts = int(datetime.fromisoformat(stamp).timestamp()) if stamp else None
    return doc["instrument_token"], round(doc["last_price"] * 100), ts


@dataclass
class BadFrame:
    frame: bytes
    good: list[Key]  # the good packets it carries (they must be published)
    bad: int  # the packets counted as malformed


def _packet(ticks: Ticks) -> bytes:
    """The single length-prefixed packet of a one-tick frame."""
    return encode(ticks)[2:]


def _frame(count: int, *packets: bytes) -> bytes:
    return struct.pack(">H", count) + b"".join(packets)


def bad_frames(options: list[int], index_token: int, count: int = 50) -> list[BadFrame]:
    """`count` bad frames of eight kinds, in turn: a 28-byte index packet with an option token
    (alone, or after a good packet), a frame cut inside a packet, a length field past the end, a
    packet of unknown length, a full-mode packet for the index, a count of more packets than the
    frame holds, junk after the last packet. Good packets get prices and timestamps no stand-in
    tick has, so they can be told apart."""
    out: list[BadFrame] = []
    for i in range(count):
        token = options[i % len(options)]
        stamp = 1_600_000_000 + 10 * i
        full = Ticks.build(token=token, mode="full", last_price=1000 + 0.05 * i, exchange_timestamp=stamp)
        ltp = Ticks.build(token=token, mode="ltp", last_price=2000 + 0.05 * i)
        good_full, good_ltp = _packet(full), _packet(ltp)
        index_quote = struct.pack(">HIIIIIII", 28, token, 12_345, 12_400, 12_300, 12_350, 12_000, 0)
        kind = i % 8
        if kind == 0:
            out.append(BadFrame(_frame(1, index_quote), [], 1))
        elif kind == 1:
            out.append(BadFrame(_frame(2, good_full, index_quote), tick_keys(full), 1))
        elif kind == 2:
            out.append(BadFrame(_frame(3, good_full, good_ltp, good_full[:100]), tick_keys(full) + tick_keys(ltp), 1))
        elif kind == 3:
            past_end = struct.pack(">H", 0xFFFF) + good_full[2:]
            out.append(BadFrame(_frame(2, good_ltp, past_end), tick_keys(ltp), 1))
        elif kind == 4:
            junk = struct.pack(">H", 12) + bytes(12)
            out.append(BadFrame(_frame(3, good_ltp, junk, good_full), tick_keys(ltp) + tick_keys(full), 1))
        elif kind == 5:
            index_full = struct.pack(">H", 184) + struct.pack(">I", index_token) + bytes(180)
            out.append(BadFrame(_frame(2, index_full, good_ltp), tick_keys(ltp), 1))
        elif kind == 6:
            out.append(BadFrame(_frame(3, good_full, good_ltp), tick_keys(full) + tick_keys(ltp), 1))
        else:
            out.append(BadFrame(_frame(1, good_ltp) + b"\x00\x07", tick_keys(ltp), 1))
    return out


class Tap:
    """Every good tick the stand-in sends, recorded at its engine while `on`."""

    def __init__(self, sim: Any) -> None:
        self.sent: Counter[Key] = Counter()
        self.frames = 0
        self.on = False
        sim.state.engine.tap = self

    def __call__(self, _conn: Any, ticks: Ticks, _frame: bytes) -> None:
        if self.on:
            self.sent.update(tick_keys(ticks))
            self.frames += 1


@dataclass
class Loss:
    sent_good: int  # stand-in ticks plus good packets in bad frames, during the window
    lost_good: int  # of those, never published
    bad_frames: int  # bad frames delivered (each inject reaches every connection)
    bad_packets: int  # bad packets in them: what may be lost
    malformed: float  # what the streamer counted as dropped, reason malformed
    missing: list[Key] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.lost_good} of {self.sent_good:,} good ticks lost to {self.bad_frames} bad frames "
                f"({self.bad_packets} bad packets in them, {self.malformed:.0f} counted as malformed)")


def _malformed(streamer: Any) -> float:
    return streamer.metrics.dropped.labels("malformed")._value.get()


async def lost_to_bad_frames(sim: Any, streamer: Any, published: Callable[[], Counter[Key]], options: list[int],
                             index_token: int, frames: int = 50, bound: float = BOUND) -> Loss:
    """Inject bad frames until `frames` have been delivered, while good ticks flow; then wait (up
    to `bound`) until everything good sent meanwhile is published, and account for it.
    `published()` counts the keys of every tick published so far."""
    tap = Tap(sim)
    before, malformed0 = published(), _malformed(streamer)
    expected: Counter[Key] = Counter()
    delivered = bad = i = 0
    catalogue = bad_frames(options, index_token, frames)
    tap.on = True
    try:
        async with aiohttp.ClientSession() as session:
            while delivered < frames:
                item = catalogue[i % len(catalogue)]
                body = {"frame_hex": item.frame.hex()}
                async with session.post(f"{sim.url}/_sim/ws/inject", json=body) as r:
                    r.raise_for_status()
                    sent = (await r.json())["frames_sent"]
                delivered += sent
                bad += sent * item.bad
                for _ in range(sent):
                    expected.update(item.good)
                i += 1
                await asyncio.sleep(0.03)  # spread them among the stand-in's frames
    finally:
        tap.on = False
    expected += tap.sent

    def missing() -> Counter[Key]:
        return expected - (published() - before)

    deadline = time.monotonic() + bound
    while missing() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    while _malformed(streamer) - malformed0 < bad and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    gone = missing()
    return Loss(sum(expected.values()), sum(gone.values()), delivered, bad, _malformed(streamer) - malformed0,
                sorted(gone.elements())[:20])


async def publishing_again_after(restart: Callable[[], object], streamer: Any, bound: float = BOUND) -> float:
    """Seconds from `restart()` returning (Redis listening again) until the streamer has published."""
    outcome = restart()
    if inspect.isawaitable(outcome):
        await outcome
    published, back = streamer.publisher.published_total, time.monotonic()
    deadline = back + bound
    while streamer.publisher.published_total == published:
        if time.monotonic() > deadline:
            raise AssertionError(f"not publishing again within {bound} s of Redis coming back")
        await asyncio.sleep(0.005)
    return time.monotonic() - back


def summary(seconds: list[float]) -> str:
    values = np.array(seconds)
    return f"median {np.median(values):.2f} s, max {values.max():.2f} s over {len(values)} outages"
