"""The batch stage: the bounded hand-off between socket readers and the rest of the pipeline, and
when a batch is due.

Readers append decoded frames (columnar `Ticks`, stamped with their receipt time) and never wait.
A batch is taken as soon as the readers go idle (a few turns of the event loop bring no new frame:
the burst the sockets held has been read), once TICK_BATCH_MAX_SIZE ticks are in, or when the batch
window (TICK_BATCH_WINDOW_MS) has run out since the oldest tick, whichever comes first. At normal
rates the readers are idle most of the time and a tick waits a few milliseconds; under load they
are not, batches grow on their own, and the window is only the ceiling. TICK_BATCH_ADAPTIVE=false
keeps the window alone (every batch waits for it). Past `capacity` ticks the oldest are
dropped (and counted), so a stuck Redis costs ticks, never memory or reader latency. Order
postbacks ride along in their own bounded queue.

The window bounds a tick's age when its flush reaches Redis, not when the flush starts: a batch is
taken `lead` seconds before its window ends, `lead` being a moving average of how long recent
flushes took from start to Redis's reply (at most half the window). A backlog goes out a few
batches per flush.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from ticker.core.wire import Ticks

IDLE_WAKE_SECONDS = 1.0  # a quiet batch loop still wakes this often (bars of quiet instruments close)
FLUSH_MAX_BATCHES = 4  # a backlog goes out a few batches per flush: each flush has fixed costs (the
# Greeks call, a column per field), while much larger ones would hold the oldest ticks back
LEAD_WEIGHT = 0.2  # of the newest flush in the moving average of flush durations
# Turns of the event loop with no new frame that count as "the readers are idle". A frame already in
# a socket's buffer takes two or three turns to reach `put` (selector -> transport -> reader task).
IDLE_TURNS = 4


@dataclass(frozen=True, slots=True)
class Chunk:
    ticks: Ticks
    received: float  # epoch seconds the frame arrived
    account_id: str


@dataclass
class Taken:
    chunks: list[Chunk]
    orders: list[bytes]

    @property
    def ticks(self) -> int:
        return sum(len(c.ticks) for c in self.chunks)


class TickBuffer:
    def __init__(self, capacity: int, batch_max: int, orders_capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.batch_max = batch_max
        self._chunks: deque[Chunk] = deque()
        self._orders: deque[bytes] = deque(maxlen=orders_capacity)
        self.count = 0
        self.puts = 0  # frames and postbacks ever appended: the batch loop sees the readers go idle
        self._oldest = 0.0  # epoch seconds of the oldest buffered item
        self._ready = asyncio.Event()
        self._full = asyncio.Event()

    @property
    def fill(self) -> float:
        return self.count / self.capacity

    def put(self, chunk: Chunk) -> int:
        """Append a decoded frame; returns how many of the oldest ticks had to be dropped."""
        n = len(chunk.ticks)
        if n == 0:
            return 0
        self._mark()
        self.puts += 1
        self._chunks.append(chunk)
        self.count += n
        dropped = self._shed() if self.count > self.capacity else 0
        if self.count >= self.batch_max:
            self._full.set()
        return dropped

    def put_order(self, doc: bytes) -> bool:
        """Queue an order postback; False when the queue was full and the oldest was dropped."""
        room = len(self._orders) < (self._orders.maxlen or 0)
        self._mark()
        self.puts += 1
        self._orders.append(doc)
        self._full.set()  # postbacks are rare and wanted at once
        return room

    def _mark(self) -> None:
        if not self._ready.is_set():
            self._oldest = time.time()
            self._ready.set()

    def _shed(self) -> int:
        dropped = 0
        while self.count > self.capacity:
            head = self._chunks[0]
            excess = self.count - self.capacity
            if len(head.ticks) <= excess:
                self._chunks.popleft()
                gone = len(head.ticks)
            else:
                self._chunks[0] = Chunk(head.ticks.take(slice(excess, None)), head.received, head.account_id)
                gone = excess
            self.count -= gone
            dropped += gone
        return dropped

    def take(self, limit: int | None = None) -> Taken:
        """Everything buffered, or whole frames (oldest first) up to about `limit` ticks so one
        flush's temporaries stay small; the rest stays for the next flush, due at once."""
        if limit is None or self.count <= limit:
            chunks = list(self._chunks)
            self._chunks.clear()
        else:
            chunks, size = [], 0
            while self._chunks and (not chunks or size + len(self._chunks[0].ticks) <= limit):
                chunks.append(self._chunks.popleft())
                size += len(chunks[-1].ticks)
        taken = Taken(chunks, list(self._orders))
        self._orders.clear()
        self.count -= taken.ticks
        self._ready.clear()
        self._full.clear()
        if self._chunks:  # cut by the limit: the rest is a backlog, due at once
            self._oldest = self._chunks[0].received
            self._ready.set()
            self._full.set()
        return taken

    def pending(self) -> bool:
        return self._ready.is_set()

    async def wait_batch(self, window: float, idle_timeout: float, adaptive: bool = True) -> bool:
        """Wait until a batch is due; False when `idle_timeout` passed with nothing buffered."""
        if not await wait_event(self._ready, idle_timeout):
            return False
        due = self._oldest + window
        if adaptive:
            while not self._full.is_set() and time.time() < due:
                if await self._readers_idle():
                    return True
        remaining = due - time.time()
        if remaining > 0 and not self._full.is_set():
            await wait_event(self._full, remaining)
        return True

    async def _readers_idle(self) -> bool:
        """True when IDLE_TURNS turns of the event loop appended nothing."""
        seen = self.puts
        for _ in range(IDLE_TURNS):
            await asyncio.sleep(0)
        return self.puts == seen


class BatchWindow:
    """When the next batch is due, learning how early to take it from how long flushes take."""

    def __init__(self, buffer: TickBuffer, window_seconds: float, adaptive: bool = True) -> None:
        self.buffer = buffer
        self.window = window_seconds
        self.adaptive = adaptive
        self.lead = 0.0  # seconds a batch is taken before its window ends

    async def next(self) -> Taken:
        """The next batch (possibly empty, after IDLE_WAKE_SECONDS of quiet)."""
        await self.buffer.wait_batch(self.window - self.lead, IDLE_WAKE_SECONDS, self.adaptive)
        return self.take()

    def take(self) -> Taken:
        return self.buffer.take(self.buffer.batch_max * FLUSH_MAX_BATCHES)

    def landed(self, took: float) -> None:
        """A flush reached Redis `took` seconds after it began."""
        self.lead += LEAD_WEIGHT * (min(max(0.0, took), self.window / 2) - self.lead)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` at most `timeout` seconds; True when it is set.

    `asyncio.timeout` rather than `wait_for`: on Python 3.11 `wait_for` can swallow a
    cancellation that lands as the event fires, and a loop that misses its cancel never stops.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
