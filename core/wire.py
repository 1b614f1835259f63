"""Kite's binary tick frames <-> columnar `Ticks`, a whole frame at a time.

A frame is a big-endian uint16 packet count, then per packet a uint16 length and the packet.
Packets are grouped by length and each group is read (or written) with one structured
big-endian dtype, so the cost per frame is a few dozen numpy operations, not a loop per tick.
Values equal kiteconnect's `KiteTicker._parse_binary` field for field; `to_kite_ticks` gives
its exact dicts for compatibility. Malformed frames raise `WireError`, never partial output;
`salvage` then recovers the packets such a frame still holds intact, for a reader that must keep
every good tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

import numpy as np

from ticker.core.wire_layout import (
    DEPTH_LEVELS,
    DEPTH_ORDERS,
    DEPTH_PRICE,
    DEPTH_QUANTITY,
    DEPTH_SIDES,
    FULL,
    LAYOUTS,
    MODE_FULL,
    MODE_LTP,
    MODE_NAMES,
    MODE_OF_LENGTH,
    MODE_QUOTE,
    PACKET_LENGTHS,
    PRICE_COLUMNS,
    U2_MAX,
    U4_MAX,
    Layout,
    is_tradable,
    packet_fits,
    price_divisor,
)
from ticker.core.wire_ticks import Ticks, percent_change, zeros

__all__ = [
    "MODE_FULL", "MODE_LTP", "MODE_NAMES", "MODE_QUOTE", "PACKET_LENGTHS", "Salvaged", "Ticks", "WireError",
    "decode", "encode", "kite_dicts", "packet_fits", "price_divisor", "salvage", "to_kite_ticks",
]

Buffer = bytes | bytearray | memoryview


class WireError(ValueError):
    """A frame that is not a well-formed Kite tick frame (or ticks that cannot be encoded)."""


# --- decode ------------------------------------------------------------------------------------

def decode(frame: Buffer) -> Ticks:
    """One binary frame -> Ticks in packet order. Heartbeats (< 2 bytes) give an empty Ticks."""
    size = len(frame)
    if size < 2:
        return Ticks.empty()
    count = (frame[0] << 8) | frame[1]
    if count == 0:
        if size != 2:
            raise WireError(f"frame declares 0 packets but has {size - 2} trailing bytes")
        return Ticks.empty()
    uniform = _uniform_packets(frame, count)
    if uniform is not None:
        layout, words = uniform
        w = words.T.astype(np.uint32, order="C")  # the one byte-swapping copy; a row per word
        columns = _columns(layout, w, np.full(count, layout.mode, np.uint8),
                           np.full(count, layout.length, np.uint16))
        return _finish({**zeros(count, skip=columns), **columns})
    return _finish(_mixed_columns(frame, count))


def _uniform_packets(frame: Buffer, count: int) -> tuple[Layout, np.ndarray] | None:
    """Fast path: every packet has the first one's length -> one zero-copy structured view."""
    if len(frame) < 4:
        return None
    layout = LAYOUTS.get((frame[2] << 8) | frame[3])
    if layout is None or len(frame) != 2 + count * (2 + layout.length):
        return None
    packets = np.frombuffer(frame, layout.prefixed, count=count, offset=2)
    if not (packets["packet_length"] == layout.length).all():
        return None
    return layout, packets["words"]


def _walk(frame: Buffer, count: int) -> tuple[list[int], set[int]]:
    """Packet lengths of a mixed frame, and the set of them; malformed frames go to `_diagnose`."""
    lengths: list[int] = []
    append = lengths.append
    pos = 2
    try:
        for _ in range(count):  # kept bare: this loop is the only per-packet Python on decode
            length = (frame[pos] << 8) | frame[pos + 1]
            append(length)
            pos += 2 + length
    except IndexError:
        _diagnose(frame, count)
    kinds = set(lengths)
    if pos != len(frame) or not kinds <= LAYOUTS.keys():
        _diagnose(frame, count)
    return lengths, kinds


def _diagnose(frame: Buffer, count: int) -> NoReturn:
    """Walk a frame known to be malformed, checking every step, and say what is wrong."""
    size = len(frame)
    pos = 2
    for i in range(count):
        if pos + 2 > size:
            raise WireError(f"frame declares {count} packets but ends after {i} ({size} bytes)")
        length = (frame[pos] << 8) | frame[pos + 1]
        if length not in LAYOUTS:
            raise WireError(f"packet {i} at byte {pos} has unknown length {length}; "
                            f"expected one of {PACKET_LENGTHS}")
        if pos + 2 + length > size:
            raise WireError(f"packet {i} at byte {pos} is truncated: declares {length} bytes, "
                            f"{size - pos - 2} remain")
        pos += 2 + length
    raise WireError(f"{size - pos} trailing bytes after {count} packets")


@dataclass(frozen=True)
class Salvaged:
    """What `salvage` recovered from a malformed frame."""

    ticks: Ticks
    lost: int  # declared packets not recovered, plus one for unaccounted trailing bytes
    problem: str  # the first defect found, for a log line


def salvage(frame: Buffer) -> Salvaged:
    """The intact packets of a frame `decode` refused, in order, and how many were lost.

    A packet is kept when its bytes are all there and its length is a known layout. The framing
    is trusted up to the first defect: a packet of unknown length is stepped over by its length
    only when the walk still ends exactly at the frame's end with the declared count; otherwise
    that length may be the corruption itself, and nothing after it is kept. Packets lost this way
    cost only themselves. Runs only after `decode` failed, so well-formed frames never pay for it.
    """
    size = len(frame)
    if size < 2:
        return Salvaged(Ticks.empty(), 0, "")
    count = (frame[0] << 8) | frame[1]
    spans, walked, end, problem, first_unknown = _salvage_walk(frame, count)
    trailing = walked == count and end < size
    if trailing and not problem:
        problem = f"{size - end} trailing bytes after {count} packets"
    if first_unknown is not None and not (walked == count and end == size):
        spans = spans[:first_unknown]
    lost = count - len(spans) + int(trailing)
    if not spans:
        return Salvaged(Ticks.empty(), lost, problem)
    clean = len(spans).to_bytes(2, "big") + b"".join(bytes(frame[start:start + 2 + n]) for start, n in spans)
    return Salvaged(decode(clean), lost, problem)


def _salvage_walk(frame: Buffer, count: int) -> tuple[list[tuple[int, int]], int, int, str, int | None]:
    """(start and length of each intact known packet, packets walked, where the walk ended, the
    first defect, how many intact packets preceded the first unknown length)."""
    size, pos = len(frame), 2
    spans: list[tuple[int, int]] = []
    problem, first_unknown, walked = "", None, 0
    for i in range(count):
        if pos + 2 > size:
            problem = problem or f"frame declares {count} packets but ends after {i} ({size} bytes)"
            break
        length = (frame[pos] << 8) | frame[pos + 1]
        if pos + 2 + length > size:
            problem = problem or f"packet {i} at byte {pos} is truncated: declares {length} bytes"
            break
        if length in LAYOUTS:
            spans.append((pos, length))
        else:
            problem = problem or f"packet {i} at byte {pos} has unknown length {length}"
            first_unknown = len(spans) if first_unknown is None else first_unknown
        pos += 2 + length
        walked = i + 1
    return spans, walked, pos, problem, first_unknown


def _mixed_columns(frame: Buffer, count: int) -> dict[str, np.ndarray]:
    """Packets of several lengths: spread every group onto one full-layout word matrix."""
    walked, kinds = _walk(frame, count)
    lengths = np.array(walked, dtype=np.intp)
    starts = np.cumsum(lengths + 2) + 2 - lengths  # byte offset of each packet body
    w = np.zeros((FULL.words, count), np.uint32)
    for length in kinds:
        layout = LAYOUTS[length]
        rows = np.flatnonzero(lengths == length)
        # Every packet starts on an even byte: a zero-copy window with one row per even offset,
        # indexed by the packets' starts, gathers the group as one (k, words) matrix.
        window = np.ndarray(((len(frame) - length) // 2 + 1, layout.words), ">u4", buffer=frame,
                            strides=(2, 4))
        group = window[starts[rows] >> 1].T
        if layout.full_words[-1] == layout.words - 1:  # quote/full: words already in place
            w[:layout.words, rows] = group
        else:
            keep = layout.full_words >= 0
            w[layout.full_words[keep, None], rows] = group[keep]
    return _columns(FULL, w, MODE_OF_LENGTH[lengths], lengths.astype(np.uint16))


def _columns(layout: Layout, w: np.ndarray, mode: np.ndarray, length: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of packets laid out as `layout`, from their native (words, k) matrix."""
    plan = _PLANS[layout.length]
    # `w` is a short-lived uint32 scratch block; columns get compact blocks of their own so a
    # held batch of Ticks does not pin the scratch (allocation and page faults dominate here).
    ints = w[plan.int_words].astype(np.int64)
    token = ints[0]
    divisor = price_divisor(token)
    cols = {"mode": mode, "packet_length": length}
    cols.update(zip(plan.ints, ints, strict=True))
    cols.update(zip(plan.prices, w[plan.price_words] / divisor, strict=True))
    if layout.depth:
        quantity, price = w[DEPTH_QUANTITY].astype(np.int64), w[DEPTH_PRICE] / divisor
        orders = (w[DEPTH_ORDERS] >> 16).astype(np.int64)
        for side, levels in DEPTH_SIDES:
            cols[f"depth_{side}_quantity"] = quantity[levels].T
            cols[f"depth_{side}_price"] = price[levels].T
            cols[f"depth_{side}_orders"] = orders[levels].T
    return cols


def _finish(out: dict[str, np.ndarray]) -> Ticks:
    out["tradable"] = is_tradable(out["token"])
    out["change"] = percent_change(out["last_price"], out["close"])
    return Ticks(**out)


@dataclass(frozen=True)
class _FramePlan:
    """Which word of a layout feeds which column, split by kind (prices get divided)."""

    prices: tuple[str, ...]
    price_words: list[int]
    ints: tuple[str, ...]
    int_words: list[int]


def _plan(layout: Layout) -> _FramePlan:
    fields = layout.fields  # the token (word 0) leads the integer block
    prices = [(n, i) for n, i in fields if n in PRICE_COLUMNS]
    ints = [(n, i) for n, i in fields if n not in PRICE_COLUMNS]
    return _FramePlan(tuple(n for n, _ in prices), [i for _, i in prices],
                 tuple(n for n, _ in ints), [i for _, i in ints])


_PLANS = {length: _plan(layout) for length, layout in LAYOUTS.items()}


# --- encode ------------------------------------------------------------------------------------

def encode(ticks: Ticks) -> bytes:
    """Ticks -> one binary frame (packet order kept). Prices are scaled and rounded to integers.

    `tradable` and `change` are not on the wire (they are derived); index packets' net-change
    word is written as zero. Values that do not fit the wire's unsigned fields raise WireError.
    """
    n = len(ticks)
    if n == 0:
        return b"\x00\x00"
    if n > U2_MAX:
        raise WireError(f"a frame holds at most {U2_MAX} packets, got {n}")
    lengths = ticks.packet_length.astype(np.intp)
    kinds = np.unique(lengths).tolist()
    unknown = [k for k in kinds if k not in LAYOUTS]
    if unknown:
        raise WireError(f"cannot encode packet length(s) {unknown}; expected one of {PACKET_LENGTHS}")
    _check_range("token", ticks.token, U4_MAX)
    divisor = price_divisor(ticks.token)
    header = n.to_bytes(2, "big")
    if len(kinds) == 1:
        return header + _pack(ticks, LAYOUTS[kinds[0]], divisor, slice(None)).tobytes()
    starts = np.cumsum(lengths + 2) - (lengths + 2)  # byte offset of each packet in the body
    body = np.zeros(int(starts[-1] + lengths[-1]) + 2, np.uint8)
    for length in kinds:
        rows = np.flatnonzero(lengths == length)
        packed = _pack(ticks, LAYOUTS[length], divisor, rows).view(np.uint8).reshape(len(rows), -1)
        # Writable window, one row per even offset: scatter the group back into packet order.
        window = np.lib.stride_tricks.as_strided(
            body, shape=((len(body) - length - 2) // 2 + 1, length + 2), strides=(2, 1))
        window[starts[rows] >> 1] = packed
    return header + body.tobytes()


def _pack(ticks: Ticks, layout: Layout, divisor: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """One group of rows as an array of length-prefixed packets of `layout`."""
    div = divisor[rows]
    w = np.zeros((layout.words, len(div)), np.uint32)
    for name, word in layout.fields:
        column = getattr(ticks, name)[rows]
        w[word] = _wire_ints(name, column * div if name in PRICE_COLUMNS else column, U4_MAX)
    if layout.depth:
        def both(part: str) -> np.ndarray:  # (10, k): buy levels then sell levels
            return np.concatenate([getattr(ticks, f"depth_{side}_{part}")[rows] for side, _ in DEPTH_SIDES],
                                  axis=1).T
        w[DEPTH_QUANTITY] = _wire_ints("depth quantity", both("quantity"), U4_MAX)
        w[DEPTH_PRICE] = _wire_ints("depth price", both("price") * div, U4_MAX)
        w[DEPTH_ORDERS] = _wire_ints("depth orders", both("orders"), U2_MAX).astype(np.uint32) << 16
    packets = np.empty(len(div), layout.prefixed)
    packets["packet_length"] = layout.length
    packets["words"] = w.T
    return packets


def _wire_ints(name: str, values: np.ndarray, top: int) -> np.ndarray:
    """Round to integers and insist they fit the unsigned wire field (NaN never fits)."""
    if values.dtype.kind == "f":
        values = np.rint(values)
    _check_range(name, values, top)
    return values


def _check_range(name: str, values: np.ndarray, top: int) -> None:
    if values.size and not (values.min() >= 0 and values.max() <= top):
        raise WireError(f"{name} does not fit the wire: scaled values must lie in 0..{top}, "
                        f"got {values.min()}..{values.max()}")


# --- kiteconnect-compatible dicts --------------------------------------------------------------

def to_kite_ticks(frame: Buffer) -> list[dict]:
    """The frame as kiteconnect's `_parse_binary` dicts, equal key for key and value for value.

    Timestamps are naive local-time datetimes from `datetime.fromtimestamp`, as kiteconnect
    gives them. For compatibility and tests; the hot path stays columnar.
    """
    return kite_dicts(decode(frame))


def kite_dicts(ticks: Ticks) -> list[dict]:
    """Ticks as kiteconnect-shaped dicts (see `to_kite_ticks`)."""
    cols = {name: col.tolist() for name, col in ticks.columns().items()}
    return [_kite_dict(cols, i) for i in range(len(ticks))]


def _kite_dict(c: dict[str, list], i: int) -> dict:
    length = c["packet_length"][i]
    d = {"tradable": c["tradable"][i], "mode": MODE_NAMES[c["mode"][i]],
         "instrument_token": c["token"][i], "last_price": c["last_price"][i]}
    if length == 8:
        return d
    if length in (28, 32):
        d["ohlc"] = {k: c[k][i] for k in ("high", "low", "open", "close")}
    else:
        for k in ("last_traded_quantity", "average_traded_price", "volume_traded",
                  "total_buy_quantity", "total_sell_quantity"):
            d[k] = c[k][i]
        d["ohlc"] = {k: c[k][i] for k in ("open", "high", "low", "close")}
    d["change"] = c["change"][i] if c["close"][i] != 0 else 0  # kiteconnect leaves an int 0
    if length == 32:
        d["exchange_timestamp"] = _kite_time(c["exchange_timestamp"][i])
    elif length == 184:
        d["last_trade_time"] = _kite_time(c["last_trade_time"][i])
        for k in ("oi", "oi_day_high", "oi_day_low"):
            d[k] = c[k][i]
        d["exchange_timestamp"] = _kite_time(c["exchange_timestamp"][i])
        d["depth"] = {side: [{"quantity": c[f"depth_{side}_quantity"][i][lvl],
                              "price": c[f"depth_{side}_price"][i][lvl],
                              "orders": c[f"depth_{side}_orders"][i][lvl]}
                             for lvl in range(DEPTH_LEVELS)]
                      for side in ("buy", "sell")}
    return d


def _kite_time(seconds: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds)
    except (OverflowError, OSError, ValueError):  # kiteconnect maps any failure to None
        return None
