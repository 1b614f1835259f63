"""`Ticks`: a batch of decoded ticks as equal-length numpy columns (one row per packet).

Fields a packet does not carry are 0 (prices included): an LTP row has open == close == 0 and
change == 0, a quote row has no timestamps, an index row has no volumes or depth. `packet_length`
says which layout a row came from (8, 28, 32, 44 or 184), so "absent" and "zero" stay distinct.
Decoded columns may be views into a few shared blocks (depth arrays are transposed views); they
never alias the frame's bytes. `take` by mask or index array and `concat` of several copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ticker.core.wire_layout import (
    DEPTH_LEVELS,
    INDEX_LENGTH_BY_MODE,
    KNOWN_LENGTH,
    LENGTH_BY_MODE,
    MODE_CODES,
    MODE_NAMES,
    MODE_OF_LENGTH,
    SEGMENT_INDICES,
    carried,
    is_tradable,
)

_I8, _F8 = np.dtype(np.int64), np.dtype(np.float64)

# Column name -> dtype, in dataclass order. Depth columns have shape (n, 5), best level first.
SCALAR_COLUMNS: dict[str, np.dtype] = {
    "token": _I8, "mode": np.dtype(np.uint8), "packet_length": np.dtype(np.uint16),
    "tradable": np.dtype(bool), "last_price": _F8, "last_traded_quantity": _I8,
    "average_traded_price": _F8, "volume_traded": _I8, "total_buy_quantity": _I8,
    "total_sell_quantity": _I8, "open": _F8, "high": _F8, "low": _F8, "close": _F8, "change": _F8,
    "last_trade_time": _I8, "exchange_timestamp": _I8, "oi": _I8, "oi_day_high": _I8,
    "oi_day_low": _I8,
}
DEPTH_COLUMNS: dict[str, np.dtype] = {
    f"depth_{side}_{part}": (_F8 if part == "price" else _I8)
    for side in ("buy", "sell") for part in ("quantity", "price", "orders")
}
COLUMNS: dict[str, np.dtype] = {**SCALAR_COLUMNS, **DEPTH_COLUMNS}
# Derived by `build` (and by the decoder) rather than given: kiteconnect derives them too.
_DERIVED = frozenset({"token", "mode", "packet_length", "tradable", "change"})
_OPTIONAL = tuple(name for name in COLUMNS if name not in _DERIVED and name != "last_price")
_CARRIED = {name: carried(name) for name in COLUMNS if name not in _DERIVED}


def zeros(n: int, skip: Collection[str] = ()) -> dict[str, np.ndarray]:
    """Fresh zero-filled columns for `n` rows (except those named in `skip`)."""
    out = {name: np.zeros(n, dtype) for name, dtype in SCALAR_COLUMNS.items() if name not in skip}
    out.update({name: np.zeros((n, DEPTH_LEVELS), dtype)
                for name, dtype in DEPTH_COLUMNS.items() if name not in skip})
    return out


def percent_change(last_price: np.ndarray, close: np.ndarray) -> np.ndarray:
    """kiteconnect's `change`: (last - close) * 100 / close, or 0 where close is 0."""
    change = np.zeros(last_price.shape, np.float64)
    np.divide((last_price - close) * 100, close, out=change, where=close != 0)
    return change


@dataclass(frozen=True, eq=False)
class Ticks:
    """Columns of one batch of ticks; every array has the same first dimension, in packet order."""

    token: np.ndarray
    mode: np.ndarray
    packet_length: np.ndarray
    tradable: np.ndarray
    last_price: np.ndarray
    last_traded_quantity: np.ndarray
    average_traded_price: np.ndarray
    volume_traded: np.ndarray
    total_buy_quantity: np.ndarray
    total_sell_quantity: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    change: np.ndarray
    last_trade_time: np.ndarray
    exchange_timestamp: np.ndarray
    oi: np.ndarray
    oi_day_high: np.ndarray
    oi_day_low: np.ndarray
    depth_buy_quantity: np.ndarray
    depth_buy_price: np.ndarray
    depth_buy_orders: np.ndarray
    depth_sell_quantity: np.ndarray
    depth_sell_price: np.ndarray
    depth_sell_orders: np.ndarray

    def __len__(self) -> int:
        return len(self.token)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ticks):
            return NotImplemented
        return all(
            a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
            for a, b in zip(self.columns().values(), other.columns().values(), strict=True)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: not hashable

    def __repr__(self) -> str:
        counts = np.bincount(self.mode, minlength=len(MODE_NAMES)).tolist()
        return f"Ticks(n={len(self)}, " + ", ".join(f"{m}={c}" for m, c in zip(MODE_NAMES, counts, strict=True)) + ")"

    def columns(self) -> dict[str, np.ndarray]:
        """Name -> array, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def segment(self) -> np.ndarray:
        """Exchange segment of each row (low byte of the token)."""
        return self.token & 0xFF

    def take(self, index: Any) -> Ticks:
        """Rows selected by a boolean mask, an integer index array or a slice (order as given)."""
        return Ticks(**{name: col[index] for name, col in self.columns().items()})

    @classmethod
    def empty(cls) -> Ticks:
        return cls(**zeros(0))

    @classmethod
    def concat(cls, parts: Iterable[Ticks]) -> Ticks:
        """One batch from several, rows in order (e.g. ticks from several frames)."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in COLUMNS})

    @classmethod
    def build(cls, *, token: Any, mode: Any, last_price: Any, packet_length: Any = None,
              **columns: Any) -> Ticks:
        """Ticks from a few arrays (scalars broadcast); omitted columns are 0.

        `mode` is a code (MODE_LTP/QUOTE/FULL) or name ('ltp'/'quote'/'full'), scalar or per row.
        `packet_length` defaults to Kite's choice for the mode (28/32 for indices, 44/184 else).
        `tradable` and `change` are derived as kiteconnect derives them; columns the packet kind
        does not carry are zeroed, so the result equals what decoding its encoding gives back.
        """
        unknown = set(columns) - set(_OPTIONAL)
        if unknown:
            raise TypeError(f"unknown Ticks column(s) {sorted(unknown)}; expected some of {list(_OPTIONAL)}")
        tok = np.atleast_1d(np.asarray(token, dtype=np.int64)).copy()
        if tok.ndim != 1:
            raise ValueError("token must be a scalar or a 1-D array")
        n = len(tok)
        codes = np.broadcast_to(_mode_codes(mode), (n,)).copy()
        length = _packet_lengths(tok, codes, packet_length)
        out = zeros(n)
        out.update(token=tok, mode=codes, packet_length=length, tradable=is_tradable(tok))
        for name, value in {"last_price": last_price, **columns}.items():
            shape = out[name].shape
            col = np.broadcast_to(np.asarray(value), shape).astype(COLUMNS[name])
            col[~_CARRIED[name][length]] = 0
            out[name] = col
        out["change"] = percent_change(out["last_price"], out["close"])
        return cls(**out)


def _mode_codes(mode: Any) -> np.ndarray:
    """Mode names or codes -> uint8 codes, validated."""
    arr = np.asarray(mode)
    if arr.dtype.kind in "US":
        codes = np.full(arr.shape, 255, np.uint8)
        for name, code in MODE_CODES.items():
            codes[arr == name] = code
    else:
        codes = arr.astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= len(MODE_CODES)):
        raise ValueError(f"mode must be one of {list(MODE_CODES)} or their codes 0..2")
    return codes.astype(np.uint8)


def _packet_lengths(token: np.ndarray, codes: np.ndarray, given: Sequence[int] | None) -> np.ndarray:
    """Default wire layout per row, or the given one checked against the known layouts and mode."""
    if given is None:
        index = (token & 0xFF) == SEGMENT_INDICES
        return np.where(index, INDEX_LENGTH_BY_MODE[codes], LENGTH_BY_MODE[codes]).astype(np.uint16)
    length = np.broadcast_to(np.asarray(given, dtype=np.int64), codes.shape)
    if length.size and (length.min() < 0 or length.max() >= len(KNOWN_LENGTH)
                        or not KNOWN_LENGTH[length].all()):
        raise ValueError("packet_length must be one of 8, 28, 32, 44, 184")
    if not (MODE_OF_LENGTH[length] == codes).all():
        raise ValueError("packet_length does not match mode (ltp: 8; quote: 28/44; full: 32/184)")
    return length.astype(np.uint16)
