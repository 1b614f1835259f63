"""The index table: both directions agree, and every NSE index with contract specs has its row."""

from __future__ import annotations

from datetime import date

from ticker.core import contract_specs
from ticker.core.indices import INDEX_UNDERLYINGS, SYMBOL_OF_NAME, index_symbol, underlying_name


def test_every_index_with_contract_specs_maps_to_its_index_and_back() -> None:
    for name in contract_specs.INDEX_NAMES:
        assert name in SYMBOL_OF_NAME, f"{name} has no index symbol"
        assert underlying_name(index_symbol(name)) == name
    assert index_symbol("NIFTYNXT50") == "NIFTY NEXT 50"


def test_names_and_symbols_are_unique_and_stocks_pass_through() -> None:
    assert len({i.name for i in INDEX_UNDERLYINGS}) == len({i.symbol for i in INDEX_UNDERLYINGS}) == len(INDEX_UNDERLYINGS)
    assert index_symbol("RELIANCE") == "RELIANCE" and underlying_name("RELIANCE") == "RELIANCE"


def test_current_lots_of_the_indices_are_nse_s() -> None:
    """The lots the table's indices trade in from the January 2026 series (NSE circular FAOP70616)."""
    lots = {name: contract_specs.lot_size(name, date(2026, 1, 27)) for name in contract_specs.INDEX_NAMES}
    assert lots == {"NIFTY": 65, "BANKNIFTY": 30, "FINNIFTY": 60, "MIDCPNIFTY": 120, "NIFTYNXT50": 25}
