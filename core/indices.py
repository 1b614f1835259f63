"""The index underlyings of derivatives, in one table: the short name their futures and options
carry (NIFTY) and Kite's tradingsymbol of the index itself in segment INDICES (NIFTY 50).

The streamer prices each derivative against its index, history finds the spot of an index option
with it, and the strike rebalancer centres its window on the index price. Contract sizes (lots,
freeze quantities, strike steps) are NSE's and live, dated, in `contract_specs`; every NSE index
named there has a row here (a test holds the two together).
"""

from __future__ import annotations

from typing import NamedTuple


class IndexUnderlying(NamedTuple):
    name: str  # as the index's derivatives carry it in `name`
    symbol: str  # the index's own tradingsymbol (segment INDICES)


INDEX_UNDERLYINGS: tuple[IndexUnderlying, ...] = (
    IndexUnderlying("NIFTY", "NIFTY 50"),
    IndexUnderlying("BANKNIFTY", "NIFTY BANK"),
    IndexUnderlying("FINNIFTY", "NIFTY FIN SERVICE"),
    IndexUnderlying("MIDCPNIFTY", "NIFTY MID SELECT"),
    IndexUnderlying("NIFTYNXT50", "NIFTY NEXT 50"),
    IndexUnderlying("SENSEX", "SENSEX"),
    IndexUnderlying("BANKEX", "BANKEX"),
)

SYMBOL_OF_NAME: dict[str, str] = {i.name: i.symbol for i in INDEX_UNDERLYINGS}
NAME_OF_SYMBOL: dict[str, str] = {i.symbol: i.name for i in INDEX_UNDERLYINGS}


def index_symbol(name: str) -> str:
    """The tradingsymbol of the index behind derivatives named `name` (a stock's name is its own)."""
    return SYMBOL_OF_NAME.get(name, name)


def underlying_name(symbol: str) -> str:
    """The name derivatives of the index `symbol` carry (NIFTY for NIFTY 50); unknown ones as given."""
    return NAME_OF_SYMBOL.get(symbol, symbol)
