"""Byte layouts of Kite's binary tick packets.

Every packet length (8, 28, 32, 44, 184) is a whole number of big-endian 4-byte words, and every
field sits on a word: a packet group is read as one (k, words) big-endian matrix, converted once,
and each column is a row of the converted block. Word positions follow kiteconnect's
`_parse_binary`; the decoder, the encoder and `Ticks.build` all read this one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

# Mode codes stored in `Ticks.mode`; MODE_NAMES[code] is the string Kite uses on the wire and in
# kiteconnect's tick dicts.
MODE_LTP = 0
MODE_QUOTE = 1
MODE_FULL = 2
Mode = Literal["ltp", "quote", "full"]
MODE_NAMES: tuple[Mode, Mode, Mode] = ("ltp", "quote", "full")
MODE_CODES: dict[str, int] = {name: code for code, name in enumerate(MODE_NAMES)}

# Exchange segment = low byte of the instrument token (kiteconnect's EXCHANGE_MAP).
SEGMENT_CDS = 3
SEGMENT_BCD = 6
SEGMENT_INDICES = 9
SEGMENT_NCO = 12

U4_MAX = 2**32 - 1  # every numeric field is an unsigned 32-bit integer on the wire
U2_MAX = 2**16 - 1  # packet count, packet length and depth order counts are 16-bit

# Price divisor per segment, indexed by `token & 0xff`: currency derivatives carry 7 decimals,
# BSE currency and NSE commodities 4, everything else paise (2).
_DIVISORS = np.full(256, 100.0)
_DIVISORS[SEGMENT_CDS] = 1e7
_DIVISORS[[SEGMENT_BCD, SEGMENT_NCO]] = 1e4


def price_divisor(token: np.ndarray) -> np.ndarray:
    """Per-token price divisor (float64), exactly as kiteconnect picks it from the segment."""
    return _DIVISORS[np.asarray(token, dtype=np.int64) & 0xFF]


def is_tradable(token: np.ndarray) -> np.ndarray:
    """Indices are not tradable; every other segment is."""
    return (np.asarray(token, dtype=np.int64) & 0xFF) != SEGMENT_INDICES


# Prices are divided by the segment divisor; every other field is a plain unsigned integer
# (quantities, open interest, epoch seconds).
PRICE_COLUMNS = frozenset({"last_price", "average_traded_price", "open", "high", "low", "close"})

# Market depth (full packets only): 10 levels of 3 words from word 16, buy levels 0..4 then sell
# 5..9; a level is quantity, price, then orders in the high 16 bits (the low 16 are padding).
DEPTH_LEVELS = 5
DEPTH_WORD = 16
DEPTH_QUANTITY = slice(DEPTH_WORD, DEPTH_WORD + 30, 3)
DEPTH_PRICE = slice(DEPTH_WORD + 1, DEPTH_WORD + 30, 3)
DEPTH_ORDERS = slice(DEPTH_WORD + 2, DEPTH_WORD + 30, 3)
DEPTH_SIDES = (("buy", slice(0, DEPTH_LEVELS)), ("sell", slice(DEPTH_LEVELS, 2 * DEPTH_LEVELS)))


@dataclass(frozen=True)
class Layout:
    """One packet kind: its byte length, mode, and the word index of each scalar field."""

    length: int
    mode: int
    fields: tuple[tuple[str, int], ...]
    depth: bool = False

    @property
    def words(self) -> int:
        return self.length // 4

    @cached_property
    def prefixed(self) -> np.dtype:
        """One packet with its 2-byte length header, as stored back to back in a frame."""
        return np.dtype([("packet_length", ">u2"), ("words", ">u4", (self.words,))])

    def word_of(self, name: str) -> int | None:
        return dict(self.fields).get(name)

    @cached_property
    def full_words(self) -> np.ndarray:
        """Where each of this layout's words sits in a full packet (-1: no counterpart).

        Index packets order OHLC differently and put their timestamp elsewhere; this map lets a
        frame of mixed packet kinds be spread onto one full-layout word matrix.
        """
        place = dict(FULL.fields)
        where = np.full(self.words, -1, np.intp)
        for name, word in self.fields:
            where[word] = place[name]
        if self.depth:
            where[DEPTH_WORD:] = np.arange(DEPTH_WORD, FULL.words)
        return where


_OHLC_INDEX = (("high", 2), ("low", 3), ("open", 4), ("close", 5))
_QUOTE = (
    ("token", 0), ("last_price", 1), ("last_traded_quantity", 2), ("average_traded_price", 3),
    ("volume_traded", 4), ("total_buy_quantity", 5), ("total_sell_quantity", 6),
    ("open", 7), ("high", 8), ("low", 9), ("close", 10),
)

LTP = Layout(8, MODE_LTP, (("token", 0), ("last_price", 1)))
# Index packets: word 6 holds a net change that kiteconnect ignores (it recomputes `change` from
# close); we ignore it on decode and write zero on encode.
INDEX_QUOTE = Layout(28, MODE_QUOTE, (("token", 0), ("last_price", 1), *_OHLC_INDEX))
INDEX_FULL = Layout(32, MODE_FULL, (*INDEX_QUOTE.fields, ("exchange_timestamp", 7)))
QUOTE = Layout(44, MODE_QUOTE, _QUOTE)
FULL = Layout(184, MODE_FULL, (
    *_QUOTE, ("last_trade_time", 11), ("oi", 12), ("oi_day_high", 13), ("oi_day_low", 14),
    ("exchange_timestamp", 15),
), depth=True)

LAYOUTS: dict[int, Layout] = {lay.length: lay for lay in (LTP, INDEX_QUOTE, INDEX_FULL, QUOTE, FULL)}
PACKET_LENGTHS: tuple[int, ...] = tuple(sorted(LAYOUTS))

# Lookup tables indexed by packet length, so whole arrays map at once.
KNOWN_LENGTH = np.zeros(U2_MAX + 1, dtype=bool)
KNOWN_LENGTH[list(LAYOUTS)] = True
MODE_OF_LENGTH = np.full(U2_MAX + 1, 255, dtype=np.uint8)
for _lay in LAYOUTS.values():
    MODE_OF_LENGTH[_lay.length] = _lay.mode
# Which layouts Kite sends for which token: indices (segment 9) get 8/28/32-byte packets, every
# tradable instrument (equity, future, option) 8/44/184. Row 1 is indices.
_FITS = np.zeros((2, U2_MAX + 1), dtype=bool)
_FITS[0, [LTP.length, QUOTE.length, FULL.length]] = True
_FITS[1, [LTP.length, INDEX_QUOTE.length, INDEX_FULL.length]] = True


def packet_fits(token: np.ndarray, length: np.ndarray, mode: np.ndarray) -> np.ndarray:
    """Per row: is the packet a layout Kite sends for that token's kind, with that layout's mode?

    A 28-byte index packet carrying an option's token decodes without error but puts OHLC where a
    quote packet keeps volumes; such a row cannot be read right and must be dropped.
    """
    index = (np.asarray(token, dtype=np.int64) & 0xFF) == SEGMENT_INDICES
    length = np.asarray(length)
    return _FITS[index.view(np.uint8), length] & (MODE_OF_LENGTH[length] == mode)


# Kite's packet length per mode code, for tradable instruments and for indices.
LENGTH_BY_MODE = np.array([LTP.length, QUOTE.length, FULL.length], dtype=np.uint16)
INDEX_LENGTH_BY_MODE = np.array([LTP.length, INDEX_QUOTE.length, INDEX_FULL.length], dtype=np.uint16)


def carried(column: str) -> np.ndarray:
    """Boolean table over packet lengths: True where a packet of that length carries `column`."""
    table = np.zeros(U2_MAX + 1, dtype=bool)
    for lay in LAYOUTS.values():
        if lay.word_of(column) is not None or (lay.depth and column.startswith("depth_")):
            table[lay.length] = True
    return table
