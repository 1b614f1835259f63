"""Kite instruments: the dump's row model, its CSV form, token/segment math and NSE symbol formats.

Kite packs the segment into the low byte of every instrument token
(`instrument_token = exchange_token << 8 | segment_id`); the ticker's binary packets carry only
the token, so the segment (and with it the price divisor and tradability) is derived from it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Segment ids as the ticker protocol uses them (kiteconnect's KiteTicker.EXCHANGE_MAP).
SEGMENT_IDS: dict[str, int] = {
    "nse": 1, "nfo": 2, "cds": 3, "bse": 4, "bfo": 5, "bcd": 6,
    "mcx": 7, "mcxsx": 8, "indices": 9, "nco": 12,
}
SEG_NSE, SEG_NFO, SEG_CDS, SEG_BSE, SEG_BFO, SEG_BCD = 1, 2, 3, 4, 5, 6
SEG_MCX, SEG_MCXSX, SEG_INDICES, SEG_NCO = 7, 8, 9, 12

CSV_COLUMNS = (
    "instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry",
    "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange",
)

InstrumentType = Literal["EQ", "FUT", "CE", "PE"]

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# Weekly option symbols use one character for the month: 1-9, then O, N, D.
_WEEKLY_MONTH = "123456789OND"
MAX_EXCHANGE_TOKEN = (1 << 24) - 1  # tokens are uint32 on the wire


class InstrumentError(ValueError):
    """An instrument token, symbol or CSV row that cannot be interpreted."""


# --- token math ------------------------------------------------------------------------------------
def make_token(exchange_token: int, segment_id: int) -> int:
    """Kite's instrument token for an exchange token in a segment."""
    if not 0 <= exchange_token <= MAX_EXCHANGE_TOKEN:
        raise InstrumentError(f"exchange_token {exchange_token} does not fit in 24 bits")
    if not 0 < segment_id < 256:
        raise InstrumentError(f"segment id {segment_id} is not a byte")
    return (exchange_token << 8) | segment_id


def split_token(instrument_token: int) -> tuple[int, int]:
    """(exchange_token, segment_id) of an instrument token."""
    if not 0 <= instrument_token < 1 << 32:
        raise InstrumentError(f"instrument_token {instrument_token} is not a uint32")
    return instrument_token >> 8, instrument_token & 0xFF


def segment_of(tokens: np.ndarray | int) -> np.ndarray | int:
    """Segment id(s) of token(s); works elementwise on numpy arrays."""
    return tokens & 0xFF


def price_divisor(segment_id: int) -> float:
    """Divisor the ticker applies to integer prices for a segment (as kiteconnect does)."""
    if segment_id == SEG_CDS:
        return 10_000_000.0
    if segment_id in (SEG_BCD, SEG_NCO):
        return 10_000.0
    return 100.0


def price_divisors(tokens: np.ndarray) -> np.ndarray:
    """Vectorised `price_divisor` over an array of instrument tokens."""
    seg = np.asarray(tokens) & 0xFF
    out = np.full(seg.shape, 100.0)
    out[seg == SEG_CDS] = 10_000_000.0
    out[(seg == SEG_BCD) | (seg == SEG_NCO)] = 10_000.0
    return out


def is_tradable(instrument_token: int) -> bool:
    """Indices are not tradable; everything else is."""
    return instrument_token & 0xFF != SEG_INDICES


# --- tradingsymbols --------------------------------------------------------------------------------
def format_strike(strike: float) -> str:
    """Strike as NSE writes it in symbols: no trailing '.0', decimals kept when present."""
    if float(strike).is_integer():
        return str(int(strike))
    return f"{strike:.2f}".rstrip("0").rstrip(".")


def future_symbol(name: str, expiry: date) -> str:
    """e.g. NIFTY25NOVFUT."""
    return f"{name}{expiry.year % 100:02d}{_MONTHS[expiry.month - 1]}FUT"


def option_symbol(name: str, expiry: date, strike: float, kind: Literal["CE", "PE"],
                  weekly: bool = False) -> str:
    """Monthly: NIFTY25NOV24000CE. Weekly: NIFTY25N1124000CE (YY, month char, DD)."""
    if kind not in ("CE", "PE"):
        raise InstrumentError(f"option kind must be CE or PE, got {kind!r}")
    yy = f"{expiry.year % 100:02d}"
    if weekly:
        stamp = f"{yy}{_WEEKLY_MONTH[expiry.month - 1]}{expiry.day:02d}"
    else:
        stamp = f"{yy}{_MONTHS[expiry.month - 1]}"
    return f"{name}{stamp}{format_strike(strike)}{kind}"


# --- the row model ---------------------------------------------------------------------------------
class Instrument(BaseModel):
    """One row of Kite's instrument dump."""

    model_config = ConfigDict(frozen=True)

    instrument_token: int = Field(ge=0, lt=1 << 32)
    exchange_token: int = Field(ge=0, le=MAX_EXCHANGE_TOKEN)
    tradingsymbol: str = Field(min_length=1)
    name: str = ""
    last_price: float = 0.0
    expiry: date | None = None
    strike: float = Field(0.0, ge=0)
    tick_size: float = Field(0.05, ge=0)
    lot_size: int = Field(1, ge=0)
    instrument_type: InstrumentType = "EQ"
    segment: str = "NSE"
    exchange: str = "NSE"

    @field_validator("expiry", mode="before")
    @classmethod
    def _blank_expiry(cls, v: object) -> object:
        return None if v == "" else v

    @property
    def segment_id(self) -> int:
        return self.instrument_token & 0xFF

    @property
    def is_option(self) -> bool:
        return self.instrument_type in ("CE", "PE")

    @property
    def is_future(self) -> bool:
        return self.instrument_type == "FUT"

    @property
    def is_call(self) -> bool:
        return self.instrument_type == "CE"

    @property
    def tradable(self) -> bool:
        return self.segment_id != SEG_INDICES

    def csv_row(self) -> list[str]:
        return [
            str(self.instrument_token), str(self.exchange_token), self.tradingsymbol, self.name,
            _num(self.last_price), self.expiry.isoformat() if self.expiry else "",
            _num(self.strike), _num(self.tick_size), str(self.lot_size),
            self.instrument_type, self.segment, self.exchange,
        ]


def _num(x: float) -> str:
    return repr(float(x))


# --- CSV -------------------------------------------------------------------------------------------
def format_csv(instruments: Iterable[Instrument]) -> str:
    """Kite's dump format: a header row then one row per instrument."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for ins in instruments:
        writer.writerow(ins.csv_row())
    return buf.getvalue()


def parse_csv(text: str | bytes) -> list[Instrument]:
    """Parse a dump; a bad row raises InstrumentError naming its line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    reader = csv.DictReader(io.StringIO(text.strip()))
    missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise InstrumentError(f"instrument CSV lacks columns: {', '.join(sorted(missing))}")
    out = []
    for lineno, row in enumerate(reader, start=2):
        try:
            out.append(_row(row))
        except (ValueError, TypeError) as exc:
            raise InstrumentError(f"instrument CSV line {lineno}: {exc}") from None
    return out


def _row(row: dict[str, str]) -> Instrument:
    return Instrument(
        instrument_token=int(row["instrument_token"]),
        exchange_token=int(row["exchange_token"]),
        tradingsymbol=row["tradingsymbol"],
        name=row["name"],
        last_price=float(row["last_price"] or 0),
        expiry=row["expiry"] or None,
        strike=float(row["strike"] or 0),
        tick_size=float(row["tick_size"] or 0),
        lot_size=int(float(row["lot_size"] or 0)),
        instrument_type=row["instrument_type"],
        segment=row["segment"],
        exchange=row["exchange"],
    )


def round_to_tick(price: np.ndarray | float, tick: np.ndarray | float) -> np.ndarray:
    """Nearest multiple of the tick size (tick 0 leaves prices at 2 decimals, as indices are)."""
    price = np.asarray(price, dtype=float)
    tick = np.asarray(tick, dtype=float)
    safe = np.where(tick > 0, tick, 0.01)
    return np.round(np.round(price / safe) * safe, 2)
