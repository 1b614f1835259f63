"""Tick JSON for subscribers, assembled a batch at a time from columns.

Building a dict per tick and serialising it costs more than everything else in the streamer put
together, so ticks are rendered from columns instead: prices (whole paise) and integers go to
`assemble` as int64 arrays it writes itself, other numbers become JSON text in one orjson call per
column (NaN -> null), the few text columns (static heads, timestamps) are lists of ready bytes, and
`assemble` stitches row i of every column between the template's literal pieces, in C
(`_assemble.c`) when it was built, else in Python with the same output. The template is chosen by
the tick's packet layout; fields a layout does not carry are written as null. Static parts (token,
symbol, expiry, strike, type) are pre-rendered once per instrument by the instrument table.
Output is one JSON object per tick (bytes), reused for the channel array and the latest-tick hash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any

import numpy as np
import orjson


def _compiled_assemble() -> Callable[[tuple[bytes, ...], list[Any], int], list[bytes]] | None:
    try:
        from ticker.streamer._assemble import assemble as compiled
    except ImportError:  # installed without a C compiler
        return None
    return compiled


_COMPILED_ASSEMBLE = _compiled_assemble()
COMPILED = _COMPILED_ASSEMBLE is not None  # fixed-point columns only pay off when C writes them

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_SPAN_TABLE = 64  # seconds: up to this spread, timestamps are rendered from a lookup table
_TS = b"\x00ts\x00"  # replaced by the flush's publish time
DEPTH_SIDES = ("buy", "sell")
DEPTH_LEVELS = 5
_LEVEL = b'{"price":%s,"quantity":%s,"orders":%s}'
DEPTH_TEMPLATE = b'{"buy":[' + b",".join([_LEVEL] * DEPTH_LEVELS) + b'],"sell":[' + b",".join(
    [_LEVEL] * DEPTH_LEVELS) + b"]}"

NULL = np.iinfo(np.int64).min  # a fixed-point column's null
Fixed = tuple[np.ndarray, int]  # int64 values and their decimals (0 or 2): `int_column`, `price_column`
Column = bytes | list[bytes] | Fixed  # a rendered JSON array, ready text per row, or fixed-point


def array_text(values: np.ndarray) -> bytes:
    """A 1-D numeric array as a JSON array; NaN and inf become null."""
    return orjson.dumps(np.ascontiguousarray(values), option=_NUMPY)


def json_tokens(values: np.ndarray) -> list[bytes]:
    """Each element of a 1-D numeric array as JSON text; NaN and inf become null."""
    return array_text(values)[1:-1].split(b",") if len(values) else []


def int_column(values: np.ndarray) -> Column:
    """Integers (volumes, quantities, order counts) for `assemble` to write itself."""
    return int_columns(values[np.newaxis])[0]


def int_columns(block: np.ndarray) -> list[Column]:
    """`int_column` of each row of a 2-D block, converted in one pass."""
    if COMPILED and (block.dtype.kind in "iu" and block.dtype.itemsize <= 4 or block.dtype == np.int64):
        return [(row, 0) for row in np.ascontiguousarray(block, dtype=np.int64)]
    return [array_text(row) for row in block]


def price_column(values: np.ndarray) -> Column:
    """Prices as whole paise for `assemble` to write with two decimals (NaN -> null); the text
    is what orjson would write for the float. A column holding any other number (a fraction of
    a paisa, inf, -0.0, beyond 1e13) is rendered by orjson instead."""
    paise = _whole_paise(values)
    return (paise, 2) if paise is not None else array_text(values)


def price_columns(block: np.ndarray) -> list[Column]:
    """`price_column` of each row of a 2-D block, in one pass when every price is whole paise."""
    paise = _whole_paise(block)
    if paise is None:
        return [price_column(row) for row in block]
    return [(row, 2) for row in paise]


def _whole_paise(prices: np.ndarray) -> np.ndarray | None:
    """Prices of any shape as C-ordered int64 paise (NULL for NaN), or None when any is not a
    whole number of paise (or there is no C assembler to write them)."""
    if not COMPILED:
        return None
    paise = np.rint(prices * 100)
    nan = np.isnan(prices)
    exact = paise / 100 == prices
    exact &= np.abs(paise) < 1e15
    exact &= (prices != 0) | ~np.signbit(prices)
    if not (exact | nan).all():
        return None
    return np.where(nan, NULL, paise).astype(np.int64, order="C")


def column_tokens(column: Column, n: int) -> list[bytes]:
    """A column as n tokens of JSON text, what `assemble` would write for each row."""
    if isinstance(column, list):
        return column
    if isinstance(column, bytes):
        return column[1:-1].split(b",") if n else []
    values, decimals = column
    nulls = values == NULL
    if decimals:
        return json_tokens(np.where(nulls, np.nan, values / 10 ** decimals))
    return [b"null" if null else b"%d" % v for v, null in zip(values.tolist(), nulls.tolist(), strict=True)]


def assemble_py(pieces: tuple[bytes, ...], columns: list[Column], n: int) -> list[bytes]:
    """What `assemble` does, in Python: row i is pieces[0] + columns[0][i] + pieces[1] + ..."""
    cols = [column_tokens(c, n) for c in columns]
    if len(pieces) != len(cols) + 1 or any(len(c) != n for c in cols):
        raise ValueError("need one more piece than columns and n values in every column")
    template = b"%s".join(p.replace(b"%", b"%%") for p in pieces)
    return [template % row for row in zip(*cols, strict=True)] if cols else [template % ()] * n


assemble = _COMPILED_ASSEMBLE or assemble_py


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


def depth_columns(columns: Mapping[str, np.ndarray], rows: slice | np.ndarray) -> list[Column]:
    """30 columns in DEPTH_TEMPLATE order: per side, per level, price/quantity/orders; each
    part of the book (both sides' levels) is converted in one pass, as a (10, n) block."""
    price, qty, orders = (np.concatenate([columns[f"depth_{side}_{part}"][rows] for side in DEPTH_SIDES], axis=1).T
                          for part in ("price", "quantity", "orders"))
    parts = zip(price_columns(price), int_columns(qty), int_columns(orders), strict=True)
    return [column for level in parts for column in level]


PRICES = frozenset({"last_price", "open", "high", "low", "close"})  # written with `price_column`
# Best bid/ask: the book side's level-0 price, null where that level is empty (price 0). When
# the book is rendered too and no best level is empty, its column is reused as it is.
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

    def _template(self, present: frozenset[str], tail: bytes) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
        """The literal pieces around the carried fields (the publish time goes into the last one),
        and those fields in order."""
        parts, order = [], []
        for name in self.fields:
            if name in present:
                order.append(name)
                value = DEPTH_TEMPLATE if name == "depth" else b"%s"
            else:
                value = b"null"
            parts.append(b'"' + name.encode() + b'":' + value)
        body = b"%s" + b",".join(parts) + b"," + tail + b'"ts":' + _TS + b"}"
        return tuple(body.split(b"%s")), tuple(order)

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
        out: list[bytes] = [b""] * n
        for length in np.unique(lengths).tolist():
            rows = np.flatnonzero(lengths == length)
            picked = self._render_group(length, [prefixes[i] for i in rows.tolist()], columns, rows, stamp)
            for i, text in zip(rows.tolist(), picked, strict=True):
                out[i] = text
        return out

    def _render_group(self, length: int, prefixes: list[bytes], columns: Mapping[str, np.ndarray],
                      rows: slice | np.ndarray, stamp: bytes) -> list[bytes]:
        template = self._templates.get(length)
        if template is None:  # callers filter rows first (enrich.py); this is the last line of defence
            raise ValueError(f"no {length}-byte packet layout for this channel; expected one of {sorted(self._templates)}")
        pieces, order = template
        depth = depth_columns(columns, rows) if "depth" in order else None
        cols: list[Column] = [prefixes]
        for name in order:
            if name == "depth":
                assert depth is not None  # built above whenever the layout has depth
                cols += depth
            elif name in BOOK_TOP:
                cols.append(_best(columns, rows, name, depth))
            elif name == "exchange_timestamp":
                cols.append(iso_tokens(columns[name][rows], self.tz))
            elif columns[name].dtype == object:
                cols.append(columns[name][rows].tolist())
            elif name in PRICES:
                cols.append(price_column(columns[name][rows]))
            elif columns[name].dtype.kind in "iu":
                cols.append(int_column(columns[name][rows]))
            else:
                cols.append(array_text(columns[name][rows]))
        return assemble((*pieces[:-1], pieces[-1].replace(_TS, stamp)), cols, len(prefixes))


def _best(columns: Mapping[str, np.ndarray], rows: slice | np.ndarray, name: str,
          depth: list[Column] | None) -> Column:
    column, position = BOOK_TOP[name]
    prices = columns[column][rows, 0]
    empty = prices <= 0
    if depth is not None and not empty.any():
        return depth[position]
    return price_column(np.where(empty, np.nan, prices))


def static_head(doc: Mapping[str, object]) -> bytes:
    """A row's pre-rendered static fields: the JSON object without its closing brace, plus a comma."""
    return orjson.dumps(doc)[:-1] + b","

