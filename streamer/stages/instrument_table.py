"""The in-memory instrument table: metadata of every streamed token as numpy columns.

Rows are sorted by token so a whole batch of ticks maps to rows with one `searchsorted`. Each
derivative row knows its underlying's spot row (the index or stock) and its expiry's future row;
option chains (same underlying and expiry) are laid out flat, strike-sorted, chain after chain,
so the synthetic forward of any set of chains is a handful of array operations. Static JSON heads
are rendered here once per instrument, not once per tick. Only compact columns are kept (the
pydantic rows it was built from are not), since 27k instruments must stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import NamedTuple

import numpy as np

from ticker.core.indices import underlying_name
from ticker.core.instruments import SEG_INDICES, Instrument
from ticker.streamer.stages.json_columns import static_head

KIND_SPOT, KIND_FUT, KIND_CE, KIND_PE = 0, 1, 2, 3
_KIND_OF_TYPE = {"EQ": KIND_SPOT, "FUT": KIND_FUT, "CE": KIND_CE, "PE": KIND_PE}


class InstrumentRow(NamedTuple):
    """What the streamer keeps of an instrument row (a validated `Instrument` is ~10x bigger)."""

    instrument_token: int
    tradingsymbol: str
    name: str
    expiry: date | None
    strike: float
    instrument_type: str
    segment: str

    @classmethod
    def of(cls, ins: Instrument) -> InstrumentRow:
        return cls(ins.instrument_token, ins.tradingsymbol, ins.name, ins.expiry, ins.strike,
                   ins.instrument_type, ins.segment)

    @property
    def segment_id(self) -> int:
        return self.instrument_token & 0xFF


Listing = Instrument | InstrumentRow


def underlying_key(ins: Listing) -> str:
    """The name that ties an instrument to its underlying: NIFTY for the NIFTY 50 index and for
    every NIFTY future and option; the tradingsymbol for a stock."""
    if ins.segment_id == SEG_INDICES:
        return underlying_name(ins.tradingsymbol)
    if ins.instrument_type == "EQ":
        return ins.tradingsymbol
    return ins.name


def type_label(ins: Listing) -> str:
    """CE / PE / FUT / INDEX / EQ, as subscribers see it."""
    return "INDEX" if ins.segment_id == SEG_INDICES else ins.instrument_type


def _identity(ins: Listing) -> tuple:
    """What the rendered heads depend on; unchanged identity lets a reload reuse them."""
    return InstrumentRow.of(ins) if isinstance(ins, Instrument) else ins


class InstrumentTable:
    def __init__(self, instruments: Iterable[Listing], previous: InstrumentTable | None = None) -> None:
        """`previous` lends its rendered heads for unchanged instruments (a reload stays cheap)."""
        items = sorted({i.instrument_token: i for i in instruments}.values(), key=lambda i: i.instrument_token)
        n = len(items)
        self.tokens = np.fromiter((i.instrument_token for i in items), np.int64, n)
        self.token_text = _objects([b"%d" % t for t in self.tokens.tolist()])  # the latest-tick hash's fields
        self.kind = np.fromiter((_KIND_OF_TYPE[i.instrument_type] for i in items), np.int8, n)
        self.strike = np.fromiter((i.strike for i in items), np.float64, n)
        self.expiry = np.array([i.expiry or "NaT" for i in items], dtype="datetime64[D]").reshape(n)
        self.keys = [underlying_key(i) for i in items]
        self.key_column = _objects(self.keys)  # the same, indexable by an array of rows
        self.symbols = [i.tradingsymbol for i in items]
        self.labels = [type_label(i) for i in items]
        self.is_option = (self.kind == KIND_CE) | (self.kind == KIND_PE)
        self.is_call = self.kind == KIND_CE
        self._link()
        self._chains()
        known = previous.heads if previous is not None else {}
        self.heads: dict[tuple, tuple[bytes, bytes]] = {}
        for ins in items:
            ident = _identity(ins)
            self.heads[ident] = known.get(ident) or (static_head(_option_doc(ins)), static_head(_tick_doc(ins)))
        # Object arrays: a batch's heads are one fancy index away (dict order is row order).
        self.option_head = _objects([h[0] for h in self.heads.values()])
        self.tick_head = _objects([h[1] for h in self.heads.values()])

    def __len__(self) -> int:
        return len(self.tokens)

    def _link(self) -> None:
        """Spot row of every row; future row of every option (same underlying and expiry)."""
        n = len(self)
        spot_of_key: dict[str, int] = {}
        fut_of: dict[tuple[str, np.datetime64], int] = {}
        for row in range(n):
            if self.kind[row] == KIND_SPOT:
                spot_of_key.setdefault(self.keys[row], row)
            elif self.kind[row] == KIND_FUT:
                fut_of[(self.keys[row], self.expiry[row])] = row
        self.spot_row = np.array([spot_of_key.get(k, -1) for k in self.keys], dtype=np.int64).reshape(n)
        self.fut_row = np.full(n, -1, np.int64)
        for row in np.flatnonzero(self.is_option).tolist():
            self.fut_row[row] = fut_of.get((self.keys[row], self.expiry[row]), -1)

    def _chains(self) -> None:
        """Chains flat: `chain_start[c]:chain_start[c+1]` are chain c's strikes (ascending) with the
        rows of their call and put (-1 when not streamed); `chain_id` per option row."""
        self.chain_id = np.full(len(self), -1, np.int64)
        options = np.flatnonzero(self.is_option)
        groups: dict[tuple[str, np.datetime64], int] = {}
        for row in options.tolist():
            self.chain_id[row] = groups.setdefault((self.keys[row], self.expiry[row]), len(groups))
        self.chain_expiry = np.array([e for _, e in groups], dtype="datetime64[D]").reshape(len(groups))
        cid, strike = self.chain_id[options], self.strike[options]
        order = np.lexsort((strike, cid))
        cid, strike, rows = cid[order], strike[order], options[order]
        first = np.ones(len(rows), bool)
        first[1:] = (cid[1:] != cid[:-1]) | (strike[1:] != strike[:-1])  # one slot per (chain, strike)
        slot = np.cumsum(first) - 1
        self.chain_of_slot = cid[first]
        self.chain_strike = strike[first]
        self.chain_ce = np.full(len(self.chain_strike), -1, np.int64)
        self.chain_pe = np.full(len(self.chain_strike), -1, np.int64)
        calls = self.is_call[rows]
        self.chain_ce[slot[calls]] = rows[calls]
        self.chain_pe[slot[~calls]] = rows[~calls]
        self.chain_start = np.searchsorted(self.chain_of_slot, np.arange(len(groups) + 1))

    def rows_of(self, tokens: np.ndarray) -> np.ndarray:
        """Row per token, -1 where the token is not in the table."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if len(self.tokens) == 0:
            return np.full(tokens.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self.tokens, tokens), len(self.tokens) - 1)
        return np.where(self.tokens[pos] == tokens, pos, -1)

    def __contains__(self, token: int) -> bool:
        return bool(self.rows_of(np.array([token]))[0] >= 0)


def _objects(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _option_doc(ins: Listing) -> dict:
    return {
        "instrument_token": ins.instrument_token, "tradingsymbol": ins.tradingsymbol,
        "name": underlying_key(ins), "expiry": ins.expiry.isoformat() if ins.expiry else None,
        "strike": ins.strike, "instrument_type": type_label(ins),
    }


def _tick_doc(ins: Listing) -> dict:
    return {"type": "tick", **_option_doc(ins)}
