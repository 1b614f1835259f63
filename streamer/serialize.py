"""Tick JSON for subscribers, rendered a batch at a time.

Building a dict per tick and serialising it costs more than everything else in the streamer put
together, so ticks are rendered from columns instead: every number is converted to JSON text by
one orjson call per column (NaN -> null), and each tick is one bytes `%` over a template chosen by
its packet layout. Static parts (token, symbol, expiry, strike, type) are pre-rendered once per
instrument by the registry. Fields a layout does not carry are written as null.
Output is one JSON object per tick (bytes), reused for the channel array and the latest-tick hash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo

import numpy as np
import orjson

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# Small non-negative integers (depth quantities and order counts, most volumes of a quiet
# instrument) are looked up rather than rendered and split: a shared bytes object per value costs
# a pointer copy, where splitting orjson's output allocates a new one for every tick.
_SMALL_INTS = np.array([b"%d" % i for i in range(1 << 16)], dtype=object)
# Prices on the wire are whole paise divided by 100, and most option prices are below ~Rs 1,300:
# their text is looked up by paise (the table is orjson's own rendering of those very floats).
_PAISE = np.array(orjson.dumps(np.arange(1 << 17) / 100, option=_NUMPY)[1:-1].split(b","), dtype=object)
_SPAN_TABLE = 64  # seconds: up to this spread, timestamps are rendered from a lookup table
_TS = b"\x00ts\x00"  # replaced by the flush's publish time
DEPTH_SIDES = ("buy", "sell")
DEPTH_LEVELS = 5
_LEVEL = b'{"price":%s,"quantity":%s,"orders":%s}'
DEPTH_TEMPLATE = b'{"buy":[' + b",".join([_LEVEL] * DEPTH_LEVELS) + b'],"sell":[' + b",".join(
    [_LEVEL] * DEPTH_LEVELS) + b"]}"


def json_tokens(values: np.ndarray) -> list[bytes]:
    """Each element of a 1-D numeric array as JSON text; NaN and inf become null."""
    if len(values) == 0:
        return []
    if values.dtype.kind in "iu":
        return _int_text(values).tolist()
    return _rendered(values)


def price_tokens(values: np.ndarray) -> list[bytes]:
    """`json_tokens` for prices: the same text, from the paise table where a price is an exact
    number of paise within it (NaN, negative and other prices are rendered as usual)."""
    return _price_text(values).tolist() if len(values) else []


def _int_text(values: np.ndarray) -> np.ndarray:
    """JSON text of integers of any shape, as an object array: small ones from the table."""
    small = values < len(_SMALL_INTS)
    small &= values >= 0
    return _patched(_SMALL_INTS, np.where(small, values, 0), small, values)


def _price_text(values: np.ndarray) -> np.ndarray:
    """JSON text of prices of any shape, as an object array: whole paise from the table."""
    paise = np.rint(values * 100)
    hit = paise / 100 == values
    hit &= paise < len(_PAISE)
    hit &= ~np.signbit(values)
    return _patched(_PAISE, np.where(hit, paise, 0).astype(np.intp), hit, values)


def _patched(table: np.ndarray, index: np.ndarray, hit: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Table text where `hit`, rendered text elsewhere (usually nowhere)."""
    out = table[index]
    if not hit.all():
        miss = np.nonzero(~hit)
        out[miss] = _rendered(values[miss])
    return out


def _rendered(values: np.ndarray) -> list[bytes]:
    return orjson.dumps(np.ascontiguousarray(values), option=_NUMPY)[1:-1].split(b",")


def iso_tokens(epoch_seconds: np.ndarray, tz: tzinfo) -> list[bytes]:
    """Quoted ISO-8601 local times (e.g. "2025-11-20T10:15:03+05:30"); 0 (absent) becomes null.

    A flush's ticks share a handful of distinct seconds, so each distinct value is rendered once
    (looked up by offset from the earliest when they span little time, which is the usual case).
    """
    if len(epoch_seconds) == 0:
        return []
    low, high = int(epoch_seconds.min()), int(epoch_seconds.max())
    if high - low < _SPAN_TABLE:
        table = np.array([_iso(s, tz) for s in range(low, high + 1)], dtype=object)
        return table[epoch_seconds - low].tolist()
    distinct, inverse = np.unique(epoch_seconds, return_inverse=True)
    rendered = np.array([_iso(int(s), tz) for s in distinct.tolist()], dtype=object)
    return rendered[inverse.reshape(-1)].tolist()


def _iso(seconds: int, tz: tzinfo) -> bytes:
    if seconds <= 0:
        return b"null"
    try:
        return b'"%s"' % datetime.fromtimestamp(seconds, tz).isoformat().encode()
    except (OverflowError, OSError, ValueError):
        return b"null"


def text_column(tokens: Sequence[bytes]) -> np.ndarray:
    """Pre-rendered JSON text as a column (an object array): `Renderer.render` takes it as it is,
    and it can be gathered and masked like the numeric columns it travels with."""
    out = np.empty(len(tokens), dtype=object)
    out[:] = tokens
    return out


def depth_tokens(columns: Mapping[str, np.ndarray], rows: slice | np.ndarray) -> list[list[bytes]]:
    """30 token columns in DEPTH_TEMPLATE order: per side, per level, price/quantity/orders."""
    # Both sides' levels side by side, (k, 10) per part: one table lookup per part for the book.
    price, qty, orders = (np.concatenate([columns[f"depth_{side}_{part}"][rows] for side in DEPTH_SIDES], axis=1)
                          for part in ("price", "quantity", "orders"))
    texts = (_price_text(price), _int_text(qty), _int_text(orders))
    return [text[:, level].tolist() for level in range(len(DEPTH_SIDES) * DEPTH_LEVELS) for text in texts]


PRICES = frozenset({"last_price", "open", "high", "low", "close"})  # rendered with `price_tokens`
# Best bid/ask: the book side's level-0 price, null where that level is empty (price 0). When
# the book is rendered too and no best level is empty, its text is reused as it is.
BOOK_TOP = {"bid": ("depth_buy_price", 0), "ask": ("depth_sell_price", 3 * DEPTH_LEVELS)}


class Renderer:
    """Renders ticks of one channel: `fields` in output order, and which of them each packet
    length carries. The template tail holds constant fields and the publish time. A column of
    dtype object holds ready JSON text (see `text_column`); `bid`/`ask` come from the depth columns."""

    def __init__(self, fields: Sequence[str], carried: Mapping[int, frozenset[str]], tail: bytes,
                 tz: tzinfo) -> None:
        self.fields = tuple(fields)
        self.tz = tz
        self._templates = {length: self._template(present, tail) for length, present in carried.items()}

    def _template(self, present: frozenset[str], tail: bytes) -> tuple[bytes, tuple[str, ...]]:
        parts, order = [], []
        for name in self.fields:
            if name in present:
                order.append(name)
                value = DEPTH_TEMPLATE if name == "depth" else b"%s"
            else:
                value = b"null"
            parts.append(b'"' + name.encode() + b'":' + value)
        body = b"%s" + b",".join(parts) + b"," + tail + b'"ts":' + _TS + b"}"
        return body, tuple(order)

    def render(self, prefixes: Sequence[bytes], lengths: np.ndarray, columns: Mapping[str, np.ndarray],
               ts: float) -> list[bytes]:
        """One JSON object per row, in row order. `prefixes[i]` is row i's static head (ending in
        a comma); `columns` holds every carried field (depth as its six (n, 5) arrays)."""
        n = len(prefixes)
        if n == 0:
            return []
        stamp = repr(round(ts, 6)).encode()
        first = int(lengths[0])
        if (lengths == first).all():  # the usual case: one packet layout, no grouping needed
            return self._render_group(first, list(prefixes), columns, slice(None), stamp)
        kinds = np.unique(lengths).tolist()
        out: list[bytes] = [b""] * n
        for length in kinds:
            rows = np.flatnonzero(lengths == length)
            picked = self._render_group(length, [prefixes[i] for i in rows.tolist()], columns, rows, stamp)
            for i, text in zip(rows.tolist(), picked, strict=True):
                out[i] = text
        return out

    def _render_group(self, length: int, prefixes: list[bytes], columns: Mapping[str, np.ndarray],
                      rows: slice | np.ndarray, stamp: bytes) -> list[bytes]:
        template, order = self._templates[length]
        template = template.replace(_TS, stamp)
        depth = depth_tokens(columns, rows) if "depth" in order else None
        cols: list[list[bytes]] = [prefixes]
        for name in order:
            if name == "depth":
                cols += depth
            elif name in BOOK_TOP:
                cols.append(_best(columns, rows, name, depth))
            elif name == "exchange_timestamp":
                cols.append(iso_tokens(columns[name][rows], self.tz))
            elif columns[name].dtype == object:
                cols.append(columns[name][rows].tolist())
            elif name in PRICES:
                cols.append(price_tokens(columns[name][rows]))
            else:
                cols.append(json_tokens(columns[name][rows]))
        return [template % args for args in zip(*cols, strict=True)]


def _best(columns: Mapping[str, np.ndarray], rows: slice | np.ndarray, name: str,
          depth: list[list[bytes]] | None) -> list[bytes]:
    column, position = BOOK_TOP[name]
    prices = columns[column][rows, 0]
    empty = prices <= 0
    if depth is not None and not empty.any():
        return depth[position]
    return price_tokens(np.where(empty, np.nan, prices))


def static_head(doc: Mapping[str, object]) -> bytes:
    """A row's pre-rendered static fields: the JSON object without its closing brace, plus a comma."""
    return orjson.dumps(doc)[:-1] + b","

