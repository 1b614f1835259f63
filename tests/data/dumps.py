"""Small instrument dumps in Kite's CSV format for the refresh tests."""

from __future__ import annotations

from datetime import date, timedelta

from ticker.core.instruments import (
    SEG_INDICES,
    SEG_NFO,
    Instrument,
    format_csv,
    future_symbol,
    make_token,
    option_symbol,
)

NIFTY = Instrument(instrument_token=256265, exchange_token=1001, tradingsymbol="NIFTY 50",
                   name="NIFTY 50", tick_size=0.0, instrument_type="EQ", segment="INDICES",
                   exchange="NSE")
assert NIFTY.segment_id == SEG_INDICES


def chain(expiry: date, strikes: list[float], first_exchange_token: int = 40_000) -> list[Instrument]:
    """A NIFTY future plus CE/PE at each strike, all expiring on `expiry`."""
    out = [Instrument(instrument_token=make_token(first_exchange_token, SEG_NFO),
                      exchange_token=first_exchange_token, tradingsymbol=future_symbol("NIFTY", expiry),
                      name="NIFTY", expiry=expiry, lot_size=75, instrument_type="FUT",
                      segment="NFO-FUT", exchange="NFO")]
    et = first_exchange_token + 1
    for strike in strikes:
        for kind in ("CE", "PE"):
            out.append(Instrument(
                instrument_token=make_token(et, SEG_NFO), exchange_token=et,
                tradingsymbol=option_symbol("NIFTY", expiry, strike, kind), name="NIFTY",
                expiry=expiry, strike=strike, lot_size=75, instrument_type=kind,
                segment="NFO-OPT", exchange="NFO"))
            et += 1
    return out


def universe(today: date, n_strikes: int = 10) -> list[Instrument]:
    """The index and two expiries' chains: one a week out, one a month out."""
    strikes = [25_000 + 50 * k for k in range(n_strikes)]
    return [NIFTY, *chain(today + timedelta(days=7), strikes, 40_000),
            *chain(today + timedelta(days=35), strikes, 50_000)]


def dump(instruments: list[Instrument]) -> bytes:
    return format_csv(instruments).encode()
