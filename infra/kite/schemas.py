"""What Kite Connect's REST API answers, as pydantic models (the `data` of each response).

Field names and types are Kite's. Kite adds fields over time and leaves some out (compact margin
modes, orders of other varieties), so every model keeps unknown fields (`extra="allow"`) and every
field it may omit is optional. Timestamps Kite sends as `YYYY-MM-DD HH:MM:SS` (IST, no zone) become
naive datetimes, as the official SDK makes them; anything else is kept as Kite sent it.

`to_json()` gives back exactly the keys Kite sent, timestamps in Kite's text form, so a job that
hands Kite's answer to its clients hands on the same document as before it was typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    model_validator,
)

_KITE_TIME = "%Y-%m-%d %H:%M:%S"


def _parse_time(value: Any) -> Any:
    """Kite's `YYYY-MM-DD HH:MM:SS` as a naive datetime; other values as they are (the SDK's rule)."""
    if isinstance(value, str) and len(value) == 19:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _time_text(value: datetime | str | None) -> str | None:
    return value.strftime(_KITE_TIME) if isinstance(value, datetime) else value


KiteTime = Annotated[datetime | str | None, BeforeValidator(_parse_time),
                     PlainSerializer(_time_text, when_used="json")]


class KiteModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The document as Kite sent it: its keys only, JSON types, timestamps as Kite's text."""
        return self.model_dump(mode="json", exclude_unset=True)


def as_json(value: Any) -> Any:
    """`to_json()` through lists and dicts of models (a GTT list, quotes by instrument)."""
    if isinstance(value, KiteModel):
        return value.to_json()
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


# --- session and user ------------------------------------------------------------------------------
class Profile(KiteModel):
    user_id: str
    user_name: str | None = None
    user_shortname: str | None = None
    user_type: str | None = None
    email: str | None = Field(None, repr=False)
    avatar_url: str | None = None
    broker: str | None = None
    exchanges: list[str] = []
    products: list[str] = []
    order_types: list[str] = []
    meta: dict[str, Any] | None = None


class Session(Profile):
    """`POST /session/token`: the profile plus the tokens of the new session."""

    api_key: str | None = None
    access_token: str = Field(repr=False)
    public_token: str | None = Field(None, repr=False)
    refresh_token: str | None = Field(None, repr=False)
    enctoken: str | None = Field(None, repr=False)
    login_time: KiteTime = None


class AvailableMargin(KiteModel):
    adhoc_margin: float | None = None
    cash: float | None = None
    opening_balance: float | None = None
    live_balance: float | None = None
    collateral: float | None = None
    intraday_payin: float | None = None


class SegmentMargins(KiteModel):
    """`GET /user/margins/:segment`, or one segment of `GET /user/margins`."""

    enabled: bool | None = None
    net: float | None = None
    available: AvailableMargin | None = None
    utilised: dict[str, float | None] = {}


class Margins(KiteModel):
    equity: SegmentMargins | None = None
    commodity: SegmentMargins | None = None


# --- orders and trades -----------------------------------------------------------------------------
class Order(KiteModel):
    """One entry of the order book, of an order's history, or an order postback."""

    order_id: str
    status: str | None = None
    parent_order_id: str | None = None
    exchange_order_id: str | None = None
    placed_by: str | None = None
    status_message: str | None = None
    status_message_raw: str | None = None
    order_timestamp: KiteTime = None
    exchange_update_timestamp: KiteTime = None
    exchange_timestamp: KiteTime = None
    variety: str | None = None
    modified: bool | None = None
    exchange: str | None = None
    tradingsymbol: str | None = None
    instrument_token: int | None = None
    order_type: str | None = None
    transaction_type: str | None = None
    validity: str | None = None
    validity_ttl: int | None = None
    product: str | None = None
    quantity: int | None = None
    disclosed_quantity: int | None = None
    price: float | None = None
    trigger_price: float | None = None
    average_price: float | None = None
    filled_quantity: int | None = None
    pending_quantity: int | None = None
    cancelled_quantity: int | None = None
    market_protection: float | None = None
    auction_number: str | None = None
    meta: dict[str, Any] | None = None
    tag: str | None = None
    tags: list[str] | None = None
    guid: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _ids_as_text(cls, data: Any) -> Any:
        """Order ids are text at Kite; a postback relayed through JSON tooling may carry numbers."""
        if isinstance(data, dict):
            for key in ("order_id", "parent_order_id", "exchange_order_id"):
                if isinstance(data.get(key), int):
                    data = {**data, key: str(data[key])}
        return data

    def carries(self, tags: set[str]) -> bool:
        """Whether the order carries one of `tags` (Kite returns the first as `tag`, all as `tags`)."""
        return bool({self.tag, *(self.tags or [])} & tags)


class Trade(KiteModel):
    trade_id: str
    order_id: str
    exchange_order_id: str | None = None
    exchange: str | None = None
    tradingsymbol: str | None = None
    instrument_token: int | None = None
    product: str | None = None
    transaction_type: str | None = None
    average_price: float | None = None
    quantity: int | None = None
    fill_timestamp: KiteTime = None
    order_timestamp: KiteTime = None
    exchange_timestamp: KiteTime = None


class OrderResult(KiteModel):
    """The answer to placing, modifying or cancelling an order (iceberg and basket parents list
    their `children`)."""

    order_id: str
    children: list[dict[str, Any]] | None = None


# --- portfolio -------------------------------------------------------------------------------------
class Position(KiteModel):
    tradingsymbol: str
    exchange: str | None = None
    instrument_token: int | None = None
    product: str | None = None
    quantity: int | None = None
    overnight_quantity: int | None = None
    multiplier: float | None = None
    average_price: float | None = None
    close_price: float | None = None
    last_price: float | None = None
    value: float | None = None
    pnl: float | None = None
    m2m: float | None = None
    unrealised: float | None = None
    realised: float | None = None
    buy_quantity: int | None = None
    buy_price: float | None = None
    buy_value: float | None = None
    buy_m2m: float | None = None
    sell_quantity: int | None = None
    sell_price: float | None = None
    sell_value: float | None = None
    sell_m2m: float | None = None
    day_buy_quantity: int | None = None
    day_buy_price: float | None = None
    day_buy_value: float | None = None
    day_sell_quantity: int | None = None
    day_sell_price: float | None = None
    day_sell_value: float | None = None


class Positions(KiteModel):
    net: list[Position] = []
    day: list[Position] = []


class Holding(KiteModel):
    tradingsymbol: str
    exchange: str | None = None
    instrument_token: int | None = None
    isin: str | None = None
    product: str | None = None
    price: float | None = None
    quantity: int | None = None
    used_quantity: int | None = None
    t1_quantity: int | None = None
    realised_quantity: int | None = None
    authorised_quantity: int | None = None
    authorised_date: KiteTime = None
    opening_quantity: int | None = None
    collateral_quantity: int | None = None
    collateral_type: str | None = None
    discrepancy: bool | None = None
    average_price: float | None = None
    last_price: float | None = None
    close_price: float | None = None
    pnl: float | None = None
    day_change: float | None = None
    day_change_percentage: float | None = None


# --- market data -----------------------------------------------------------------------------------
class Ohlc(KiteModel):
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None


class DepthLevel(KiteModel):
    price: float | None = None
    quantity: int | None = None
    orders: int | None = None


class Depth(KiteModel):
    buy: list[DepthLevel] = []
    sell: list[DepthLevel] = []


class LtpQuote(KiteModel):
    """`GET /quote/ltp`, per instrument."""

    instrument_token: int
    last_price: float | None = None


class OhlcQuote(LtpQuote):
    """`GET /quote/ohlc`, per instrument."""

    ohlc: Ohlc | None = None


class Quote(OhlcQuote):
    """`GET /quote`, per instrument: the full market snapshot."""

    timestamp: KiteTime = None
    last_trade_time: KiteTime = None
    last_quantity: int | None = None
    buy_quantity: int | None = None
    sell_quantity: int | None = None
    volume: int | None = None
    average_price: float | None = None
    oi: int | None = None
    oi_day_high: int | None = None
    oi_day_low: int | None = None
    net_change: float | None = None
    lower_circuit_limit: float | None = None
    upper_circuit_limit: float | None = None
    depth: Depth | None = None


class Candle(NamedTuple):
    """One historical candle. Kite sends `[timestamp, open, high, low, close, volume(, oi)]` with the
    timestamp zoned (`2024-01-02T09:15:00+0530`), kept zoned here. A typed row rather than a model:
    a long minute range holds tens of thousands, and pydantic reads these without Python code."""

    date: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    oi: int | None = None

    @classmethod
    def from_kite(cls, row: Sequence[Any]) -> Candle:
        return _CANDLE.validate_python(row)


_CANDLE: TypeAdapter[Candle] = TypeAdapter(Candle)


# --- GTT -------------------------------------------------------------------------------------------
class GttCondition(KiteModel):
    exchange: str | None = None
    tradingsymbol: str | None = None
    trigger_values: list[float] = []
    last_price: float | None = None
    instrument_token: int | None = None


class GttLegOrder(KiteModel):
    exchange: str | None = None
    tradingsymbol: str | None = None
    product: str | None = None
    order_type: str | None = None
    transaction_type: str | None = None
    quantity: int | None = None
    price: float | None = None
    result: dict[str, Any] | None = None


class Gtt(KiteModel):
    id: int
    user_id: str | None = None
    parent_trigger: int | None = None
    type: str | None = None
    created_at: KiteTime = None
    updated_at: KiteTime = None
    expires_at: KiteTime = None
    status: str | None = None
    condition: GttCondition | None = None
    orders: list[GttLegOrder] = []
    meta: dict[str, Any] | None = None


class GttResult(KiteModel):
    """The answer to placing, modifying or deleting a GTT."""

    trigger_id: int


# --- margin calculation ----------------------------------------------------------------------------
class Gst(KiteModel):
    igst: float | None = None
    cgst: float | None = None
    sgst: float | None = None
    total: float | None = None


class Charges(KiteModel):
    transaction_tax: float | None = None
    transaction_tax_type: str | None = None
    exchange_turnover_charge: float | None = None
    sebi_turnover_charge: float | None = None
    brokerage: float | None = None
    stamp_duty: float | None = None
    gst: Gst | None = None
    total: float | None = None


class Pnl(KiteModel):
    realised: float | None = None
    unrealised: float | None = None


class OrderMargins(KiteModel):
    """The margins of one order (or a basket's total); the compact mode sends `total` only."""

    type: str | None = None
    tradingsymbol: str | None = None
    exchange: str | None = None
    span: float | None = None
    exposure: float | None = None
    option_premium: float | None = None
    additional: float | None = None
    bo: float | None = None
    cash: float | None = None
    var: float | None = None
    pnl: Pnl | None = None
    leverage: float | None = None
    charges: Charges | None = None
    total: float | None = None


class BasketMargins(KiteModel):
    """`POST /margins/basket`: each order alone (`initial`), together (`final`), per order, charges."""

    initial: OrderMargins | None = None
    final: OrderMargins | None = None
    orders: list[OrderMargins] = []
    charges: Charges | None = None


class OrderCharges(KiteModel):
    """`POST /charges/orders`: what one executed order costs (Kite's virtual contract note)."""

    transaction_type: str | None = None
    tradingsymbol: str | None = None
    exchange: str | None = None
    variety: str | None = None
    product: str | None = None
    order_type: str | None = None
    quantity: int | None = None
    price: float | None = None
    charges: Charges | None = None


# --- mutual funds ----------------------------------------------------------------------------------
class MfInstrument(KiteModel):
    """A row of `/mf/instruments` (CSV), typed as the SDK types it: the fund's purchase rules."""

    tradingsymbol: str
    name: str | None = None
    purchase_allowed: bool = False
    redemption_allowed: bool = False
    minimum_purchase_amount: float = 0.0
    purchase_amount_multiplier: float = 0.0
    minimum_additional_purchase_amount: float = 0.0
    minimum_redemption_quantity: float = 0.0
    redemption_quantity_multiplier: float = 0.0
    last_price: float | None = None  # the other columns (amc, plan, ...) are kept as Kite's text


class MfOrder(KiteModel):
    order_id: str
    tradingsymbol: str | None = None
    status: str | None = None
    status_message: str | None = None
    folio: str | None = None
    transaction_type: str | None = None
    variety: str | None = None
    purchase_type: str | None = None
    quantity: float | None = None
    amount: float | None = None
    average_price: float | None = None
    tag: str | None = None
    order_timestamp: KiteTime = None


class MfSip(KiteModel):
    sip_id: str
    tradingsymbol: str | None = None
    fund: str | None = None
    status: str | None = None
    frequency: str | None = None
    instalment_amount: float | None = None
    instalments: int | None = None
    instalment_day: int | None = None
    completed_instalments: int | None = None
    pending_instalments: int | None = None
    next_instalment: str | None = None
    created: KiteTime = None
    last_instalment: KiteTime = None
    tag: str | None = None


class MfHolding(KiteModel):
    folio: str | None = None
    fund: str | None = None
    tradingsymbol: str
    average_price: float | None = None
    last_price: float | None = None
    last_price_date: str | None = None
    pnl: float | None = None
    quantity: float | None = None


class MfOrderResult(KiteModel):
    order_id: str


class MfSipResult(KiteModel):
    sip_id: str
