"""A few instruments of each kind, written straight into the session database."""

from __future__ import annotations

from datetime import date, timedelta

import asyncpg

from ticker.core.instruments import SEG_NFO, Instrument, make_token, option_symbol

NIFTY_INDEX = 256265
EXPIRY = date.today() + timedelta(days=30)
LOT = 65  # NIFTY's lot from NSE's January 2026 series (core/contract_specs.py)


def _option(strike: int, kind: str) -> Instrument:
    symbol = option_symbol("NIFTY", EXPIRY, strike, kind)  # type: ignore[arg-type]
    et = 900_000 + strike // 50 * 2 + (kind == "PE")
    return Instrument(instrument_token=make_token(et, SEG_NFO), exchange_token=et, tradingsymbol=symbol,
                      name="NIFTY", expiry=EXPIRY, strike=float(strike), tick_size=0.05, lot_size=LOT,
                      instrument_type=kind, segment="NFO-OPT", exchange="NFO")  # type: ignore[arg-type]


INDEX = Instrument(instrument_token=NIFTY_INDEX, exchange_token=NIFTY_INDEX >> 8, tradingsymbol="NIFTY 50",
                   name="NIFTY 50", tick_size=0.0, lot_size=1, instrument_type="EQ", segment="INDICES",
                   exchange="NSE")
EQUITY = Instrument(instrument_token=408065, exchange_token=1594, tradingsymbol="INFY", name="INFOSYS",
                    tick_size=0.05, lot_size=1, instrument_type="EQ", segment="NSE", exchange="NSE")
OPTIONS = [_option(strike, kind) for strike in range(25_600, 26_050, 50) for kind in ("CE", "PE")]
RETIRED = _option(20_000, "CE")
CALL = OPTIONS[8]  # a NIFTY call in the middle of the chain


async def seed_instruments(db: asyncpg.Pool) -> list[Instrument]:
    rows = [INDEX, EQUITY, *OPTIONS, RETIRED]
    await db.executemany(
        """
        INSERT INTO instruments (instrument_token, exchange_token, tradingsymbol, name, last_price, expiry,
            strike, tick_size, lot_size, instrument_type, segment, exchange, is_active)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        ON CONFLICT (instrument_token) DO NOTHING
        """,
        [(i.instrument_token, i.exchange_token, i.tradingsymbol, i.name, i.last_price, i.expiry, i.strike,
          i.tick_size, i.lot_size, i.instrument_type, i.segment, i.exchange, i is not RETIRED) for i in rows],
    )
    return rows
