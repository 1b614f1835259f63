"""The late joiners' snapshot: the latest tick per token in the `<prefix>:latest` hash, at most
LATEST_SNAPSHOT_MS behind the channels.

Writing every tick into the hash doubled what each flush sent to Redis and became most of Redis's
work at high tick rates, while a reader of the hash (a new WebSocket client, GET /quotes) only
ever wants each token's most recent tick. So a token that ticks is held back for one interval,
taking any newer tick of it meanwhile, and then written once: a busy token costs one hash field
per interval however often it ticks, and the writes are spread over the flushes. State is kept
per instrument table row in arrays, so it costs a few vectorised operations per flush and is
bounded by the table's size.

A flush that never reached Redis (an outage) gives its fields back (`restore`): each goes out
again with the next flush unless a newer tick of that token was taken or is waiting meanwhile, so
the hash catches up by itself once Redis is back, quiet tokens included.
"""

from __future__ import annotations

import numpy as np


class LatestSnapshot:
    def __init__(self, interval_seconds: float) -> None:
        self.interval = interval_seconds
        self._fields = np.empty(0, dtype=object)  # the hash field (token text) of each instrument table row
        self._text = np.empty(0, dtype=object)  # each row's pending tick JSON, None when none
        self._since = np.empty(0)  # when each row's pending tick became pending; inf when none
        self._taken = np.empty(0)  # when each row's tick was last taken for a flush
        self._row_of: dict[bytes, int] = {}  # hash field -> row, for `restore`
        self._carry: dict[bytes, bytes] = {}  # still pending when the instrument table was replaced

    @property
    def pending(self) -> int:
        return int(np.isfinite(self._since).sum()) + len(self._carry)

    def rebind(self, fields: np.ndarray) -> None:
        """A new instrument table (`fields`: its token texts by row); what was pending goes out with the
        next write."""
        self._carry.update(self._items(np.flatnonzero(np.isfinite(self._since))))
        self._fields = fields
        self._text = np.empty(len(fields), dtype=object)
        self._since = np.full(len(fields), np.inf)
        self._taken = np.full(len(fields), -np.inf)
        self._row_of = dict(zip(fields.tolist(), range(len(fields)), strict=True))

    def put(self, rows: np.ndarray, rendered: list[bytes], now: float) -> None:
        """Rows' newest ticks (a row repeated within `rows` keeps its last one)."""
        if len(rows):
            self._text[rows] = np.fromiter(rendered, dtype=object, count=len(rendered))
            self._since[rows] = np.minimum(self._since[rows], now)

    def take(self, now: float, *, force: bool = False) -> dict[bytes, bytes]:
        """What to write now: rows pending for a whole interval, or everything if forced."""
        due = np.flatnonzero(np.isfinite(self._since) if force else self._since <= now - self.interval)
        out, self._carry = self._carry, {}
        out.update(self._items(due))
        self._taken[due] = now
        return out

    def restore(self, lost: dict[bytes, bytes], taken_at: float) -> int:
        """Fields of a flush taken at `taken_at` that did not reach Redis: due again at once,
        except where a newer tick of the token was taken since or is pending. Returns how many."""
        back = 0
        for field, text in lost.items():
            row = self._row_of.get(field)
            if row is None or self._taken[row] > taken_at or np.isfinite(self._since[row]):
                continue
            self._text[row] = text
            self._since[row] = 0.0  # long overdue: the next take writes it
            back += 1
        return back

    def _items(self, rows: np.ndarray) -> dict[bytes, bytes]:
        if not len(rows):
            return {}
        items = dict(zip(self._fields[rows].tolist(), self._text[rows].tolist(), strict=True))
        self._text[rows] = None
        self._since[rows] = np.inf
        return items
