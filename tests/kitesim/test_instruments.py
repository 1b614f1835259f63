"""ticker.core.instruments: token math, symbols, the dump's CSV round trip."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kiteconnect import KiteConnect, KiteTicker

from ticker.core.instruments import (
    SEG_INDICES,
    SEG_NFO,
    SEGMENT_IDS,
    Instrument,
    InstrumentError,
    format_csv,
    future_symbol,
    make_token,
    option_symbol,
    parse_csv,
    price_divisor,
    price_divisors,
    round_to_tick,
    split_token,
)


def test_segment_ids_match_kiteconnect():
    for name, seg in SEGMENT_IDS.items():
        assert KiteTicker.EXCHANGE_MAP[name] == seg


def test_known_index_tokens():
    assert make_token(1001, SEG_INDICES) == 256265
    assert split_token(260105) == (1016, SEG_INDICES)


@given(st.integers(0, (1 << 24) - 1), st.sampled_from(sorted(SEGMENT_IDS.values())))
def test_token_round_trip(exchange_token, seg):
    assert split_token(make_token(exchange_token, seg)) == (exchange_token, seg)


def test_bad_tokens_raise():
    with pytest.raises(InstrumentError):
        make_token(1 << 24, SEG_NFO)
    with pytest.raises(InstrumentError):
        split_token(-1)


def test_divisors_follow_kiteconnect_segments():
    assert price_divisor(3) == 1e7 and price_divisor(6) == 1e4 and price_divisor(2) == 100
    tokens = np.array([make_token(5, s) for s in (1, 2, 3, 6, 9, 12)])
    assert price_divisors(tokens).tolist() == [100, 100, 1e7, 1e4, 100, 1e4]


def test_symbols_in_nse_formats():
    assert future_symbol("NIFTY", date(2025, 11, 25)) == "NIFTY25NOVFUT"
    assert option_symbol("NIFTY", date(2025, 11, 25), 24000, "CE") == "NIFTY25NOV24000CE"
    assert option_symbol("NIFTY", date(2025, 11, 4), 24050, "PE", weekly=True) == "NIFTY25N0424050PE"
    assert option_symbol("NIFTY", date(2025, 1, 9), 23500, "CE", weekly=True) == "NIFTY2510923500CE"
    assert option_symbol("X", date(2025, 10, 28), 102.5, "CE", weekly=True) == "X25O28102.5CE"
    with pytest.raises(InstrumentError):
        option_symbol("NIFTY", date(2025, 11, 25), 24000, "XX")  # type: ignore[arg-type]


def _rows() -> list[Instrument]:
    expiry = date(2030, 1, 29)
    return [
        Instrument(instrument_token=256265, exchange_token=1001, tradingsymbol="NIFTY 50", name="NIFTY 50",
                   last_price=24000.5, tick_size=0.0, segment="INDICES", exchange="NSE"),
        Instrument(instrument_token=make_token(40000, SEG_NFO), exchange_token=40000,
                   tradingsymbol=option_symbol("NIFTY", expiry, 24000, "CE"), name="NIFTY",
                   last_price=120.35, expiry=expiry, strike=24000, lot_size=75, instrument_type="CE",
                   segment="NFO-OPT", exchange="NFO"),
    ]


def test_csv_round_trip_and_kiteconnect_parses_it():
    rows = _rows()
    text = format_csv(rows)
    assert parse_csv(text) == rows
    parsed = KiteConnect("k")._parse_instruments(text.encode())
    assert [p["instrument_token"] for p in parsed] == [256265, rows[1].instrument_token]
    assert parsed[1]["expiry"] == date(2030, 1, 29) and parsed[1]["strike"] == 24000.0
    assert rows[0].tradable is False and rows[1].is_call and rows[1].segment_id == SEG_NFO


def test_bad_csv_names_the_line():
    text = format_csv(_rows()).replace("NFO-OPT,NFO", "NFO-OPT,NFO").replace(",CE,", ",ZZ,")
    with pytest.raises(InstrumentError, match="line 3"):
        parse_csv(text)
    with pytest.raises(InstrumentError, match="lacks columns"):
        parse_csv("a,b\n1,2\n")


def test_round_to_tick():
    assert round_to_tick(np.array([10.02, 10.03, 0.024]), 0.05).tolist() == [10.0, 10.05, 0.0]
    assert round_to_tick(24000.123, 0.0).tolist() == 24000.12
