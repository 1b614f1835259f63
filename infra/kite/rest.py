"""An asyncio client for Kite Connect's REST API (v3), speaking exactly what the official SDK speaks.

Same routes, headers (`X-Kite-Version: 3`, `Authorization: token api_key:access_token`), form bodies
and envelopes as `kiteconnect.KiteConnect`, and the SDK's own exception classes, so callers can treat
errors the way Kite documents them. One `KiteHttp` (one aiohttp session) per process is shared by
every account; `KiteApi` binds it to one account's credentials and returns Kite's answers as the
models of ticker.infra.kite.schemas (an answer that does not fit them is a DataException).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any, TypeVar

import aiohttp
import orjson
from kiteconnect import exceptions as kex
from kiteconnect.exceptions import (  # Kite's error classes, the SDK's own, so callers catch one set
    DataException,
    GeneralException,
    InputException,
    KiteException,
    NetworkException,
    OrderException,
    PermissionException,
    TokenException,
)

__all__ = [  # Kite's error classes are part of this client's surface
    "DataException", "GeneralException", "InputException", "KiteApi", "KiteException", "KiteHttp",
    "KiteRefusal", "KiteTimeout", "KiteUnreachable", "NetworkException", "OrderException",
    "PermissionException", "TokenException", "checksum", "is_transient",
]
from pydantic import BaseModel, TypeAdapter, ValidationError

from ticker.infra.kite.egress import Egress
from ticker.infra.kite.schemas import (
    BasketMargins,
    Candle,
    Gtt,
    GttResult,
    Holding,
    LtpQuote,
    Margins,
    MfHolding,
    MfInstrument,
    MfOrder,
    MfOrderResult,
    MfSip,
    MfSipResult,
    OhlcQuote,
    Order,
    OrderCharges,
    OrderMargins,
    OrderResult,
    Positions,
    Profile,
    Quote,
    SegmentMargins,
    Session,
    Trade,
)

KITE_VERSION = "3"
USER_AGENT = "ticker-service/0.1"
# Instruments per market-data call Kite takes: /quote up to 500, /quote/ltp and /quote/ohlc up to 1,000.
QUOTE_MAX_INSTRUMENTS = 500
LTP_MAX_INSTRUMENTS = OHLC_MAX_INSTRUMENTS = 1000

Pace = Callable[[], Awaitable[Any]]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# Re-exported so callers need not know where they come from.


class KiteTimeout(NetworkException):
    """No response in time. The request may still have taken effect at Kite (an order may exist)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=504)


class KiteUnreachable(NetworkException):
    """The connection failed before a request was sent; nothing happened at Kite."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=503)


class KiteRefusal(GeneralException):
    """A refusal of a kind Kite documents but the SDK has no class for (UserException,
    MarginException, HoldingException): the account or its funds, never worth retrying."""


def is_rate_limited(exc: BaseException | None) -> bool:
    """Kite's 429: a rate window was full (ours or another client's use of the same key)."""
    return isinstance(exc, KiteException) and exc.code == 429


def is_transient(exc: BaseException) -> bool:
    """Worth retrying, by Kite's documented error types: a NetworkException (Kite could not reach its
    order system, a 429 rate limit, a gateway error, our own timeouts and failed connections) or an
    unclassified server failure (GeneralException with a 5xx). Never: TokenException and
    PermissionException (credentials), InputException and OrderException (the request),
    DataException (Kite could not read its order system's answer: repeating the call could act
    twice), the account refusals of KiteRefusal."""
    if isinstance(exc, NetworkException):
        return True
    if isinstance(exc, KiteException):
        if exc.code == 429:
            return True
        return type(exc) is GeneralException and exc.code >= 500
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError)


class KiteHttp:
    """Owns the aiohttp session; close it on shutdown. `egress` says which calls go through a proxy
    (Kite accepts orders only from a registered static IP; see ticker.infra.kite.egress)."""

    def __init__(self, root: str, *, timeout: float = 7.0, limit: int = 100, egress: Egress | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.root = root.rstrip("/")
        self.timeout = timeout
        self.egress = egress or Egress()
        # without a context of our own, the system's trusted CAs
        tls: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, ssl=tls),
            headers={"X-Kite-Version": KITE_VERSION, "User-Agent": USER_AGENT},
            json_serialize=lambda v: orjson.dumps(v).decode(),
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        auth: tuple[str, str] | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        json_body: Any = None,
        order_path: bool = False,
    ) -> Any:
        """One call. GET/DELETE put params in the query; POST/PUT send them as a form, as Kite wants,
        or `json_body` as JSON (the margin endpoints). `order_path` marks an order or GTT write, which
        leaves through the egress proxy when one is set."""
        headers = {"Authorization": f"token {auth[0]}:{auth[1]}"} if auth else {}
        clean = {k: _wire(v) for k, v in (params or {}).items() if v is not None}
        query = clean if method in ("GET", "DELETE") or json_body is not None else None
        form = clean if method in ("POST", "PUT") and json_body is None else None
        proxy = self.egress.proxy_for(order_path)
        proxy_headers = None
        if proxy and self.egress.headers:
            # A tunnel (https, as Kite is) authenticates on its CONNECT; a plain-http request is sent to
            # the proxy itself and carries the credentials in its own headers.
            if self.root.startswith("https:"):
                proxy_headers = dict(self.egress.headers)
            else:
                headers.update(self.egress.headers)
        try:
            async with self._session.request(
                method, self.root + path, params=query, data=form, json=json_body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
                proxy=proxy, proxy_headers=proxy_headers,
            ) as resp:
                body = await resp.read()
                return _parse(resp.status, resp.headers.get("Content-Type", ""), body)
        except TimeoutError as exc:
            raise KiteTimeout(f"Kite did not answer {method} {path} in time") from exc
        except aiohttp.ClientProxyConnectionError as exc:
            raise KiteUnreachable(f"cannot reach the egress proxy {_where(proxy)}: {exc.os_error}") from exc
        except aiohttp.ClientHttpProxyError as exc:  # the proxy refused the tunnel: nothing reached Kite
            raise KiteUnreachable(f"the egress proxy {_where(proxy)} refused the connection "
                                  f"(HTTP {exc.status})") from exc
        except aiohttp.ClientConnectorError as exc:
            raise KiteUnreachable(f"cannot reach Kite at {self.root}: {exc.os_error}") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise KiteTimeout(f"Kite closed the connection during {method} {path}") from exc
        except aiohttp.ClientError as exc:
            raise KiteTimeout(f"{method} {path} failed: {exc.__class__.__name__}") from exc


def _where(proxy: str | None) -> str:
    return proxy.split("://", 1)[-1] if proxy else "?"


def _wire(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


def _parse(status: int, content_type: str, body: bytes) -> Any:
    if "json" in content_type:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:  # cut short on the way: like a lost answer
            raise NetworkException(f"unparseable JSON from Kite (HTTP {status})", code=502) from exc
        if data.get("status") == "error" or data.get("error_type"):
            raise _error_class(str(data.get("error_type")))(str(data.get("message", "unknown error")), code=status)
        return data.get("data")
    if "csv" in content_type:
        return body
    if status >= 500 or status == 429:
        raise NetworkException(f"Kite answered HTTP {status}", code=status)
    raise DataException(f"unexpected Content-Type {content_type!r} (HTTP {status})", code=502)


def _error_class(error_type: str) -> type[KiteException]:
    """The exception for Kite's `error_type` (the SDK's classes, KiteRefusal for the documented rest)."""
    if error_type in ("UserException", "MarginException", "HoldingException"):
        return KiteRefusal
    cls = getattr(kex, error_type, GeneralException)
    return cls if isinstance(cls, type) and issubclass(cls, KiteException) else GeneralException


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def checksum(api_key: str, request_token: str, api_secret: str) -> str:
    return hashlib.sha256(f"{api_key}{request_token}{api_secret}".encode()).hexdigest()


def _typed(adapter: TypeAdapter[T], data: Any, what: str) -> T:
    """Kite's `data` as its model; an answer that does not fit is Kite's data problem, not ours to retry."""
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "data"
        raise DataException(f"unexpected answer from Kite for {what}: {where}: {err['msg']}", code=502) from None


_ORDERS = TypeAdapter(list[Order])
_TRADES = TypeAdapter(list[Trade])
_HOLDINGS = TypeAdapter(list[Holding])
_GTTS = TypeAdapter(list[Gtt])
_CANDLES = TypeAdapter(list[Candle])
_ORDER_MARGINS = TypeAdapter(list[OrderMargins])
_ORDER_CHARGES = TypeAdapter(list[OrderCharges])
_QUOTES = TypeAdapter(dict[str, Quote])
_LTPS = TypeAdapter(dict[str, LtpQuote])
_OHLCS = TypeAdapter(dict[str, OhlcQuote])
_MF_ORDERS = TypeAdapter(list[MfOrder])
_MF_SIPS = TypeAdapter(list[MfSip])
_MF_HOLDINGS = TypeAdapter(list[MfHolding])
_MF_INSTRUMENTS = TypeAdapter(list[MfInstrument])


@cache
def _one(model: type[M]) -> TypeAdapter[M]:
    return TypeAdapter(model)


@dataclass
class KiteApi:
    """Kite's REST calls for one account; answers come back as the models of ticker.infra.kite.schemas."""

    http: KiteHttp
    api_key: str
    access_token: str | None = None

    async def _call(self, method: str, path: str, params: dict[str, Any] | None = None,
                    timeout: float | None = None, *, json_body: Any = None, order_path: bool = False) -> Any:
        auth = (self.api_key, self.access_token) if self.access_token else None
        return await self.http.request(method, path, auth=auth, params=params, timeout=timeout,
                                       json_body=json_body, order_path=order_path)

    # session
    async def generate_session(self, request_token: str, api_secret: str) -> Session:
        data = await self._call("POST", "/session/token", {
            "api_key": self.api_key, "request_token": request_token,
            "checksum": checksum(self.api_key, request_token, api_secret),
        })
        session = _typed(_one(Session), data, "the session")
        self.access_token = session.access_token
        return session

    async def invalidate_access_token(self) -> Any:
        return await self._call("DELETE", "/session/token",
                                {"api_key": self.api_key, "access_token": self.access_token})

    async def profile(self) -> Profile:
        return _typed(_one(Profile), await self._call("GET", "/user/profile"), "the profile")

    async def margins(self) -> Margins:
        return _typed(_one(Margins), await self._call("GET", "/user/margins"), "margins")

    async def segment_margins(self, segment: str) -> SegmentMargins:
        return _typed(_one(SegmentMargins), await self._call("GET", f"/user/margins/{segment}"), "margins")

    # orders
    # Orders go out as given: order intake (core/order_intake.py) has filled in market protection.
    async def place_order(self, variety: str, params: dict[str, Any], timeout: float | None = None) -> OrderResult:
        data = await self._call("POST", f"/orders/{variety}", params, timeout, order_path=True)
        return _typed(_one(OrderResult), data, "a placed order")

    async def modify_order(self, variety: str, order_id: str, params: dict[str, Any],
                           timeout: float | None = None) -> OrderResult:
        data = await self._call("PUT", f"/orders/{variety}/{order_id}", params, timeout, order_path=True)
        return _typed(_one(OrderResult), data, "a modified order")

    async def cancel_order(self, variety: str, order_id: str, parent_order_id: str | None = None,
                           timeout: float | None = None) -> OrderResult:
        params = {"parent_order_id": parent_order_id}
        data = await self._call("DELETE", f"/orders/{variety}/{order_id}", params, timeout, order_path=True)
        return _typed(_one(OrderResult), data, "a cancelled order")

    async def orders(self, timeout: float | None = None) -> list[Order]:
        return _typed(_ORDERS, await self._call("GET", "/orders", timeout=timeout), "the order book")

    async def order_history(self, order_id: str, timeout: float | None = None) -> list[Order]:
        return _typed(_ORDERS, await self._call("GET", f"/orders/{order_id}", timeout=timeout), "an order's history")

    async def order_trades(self, order_id: str, timeout: float | None = None) -> list[Trade]:
        return _typed(_TRADES, await self._call("GET", f"/orders/{order_id}/trades", timeout=timeout),
                      "an order's trades")

    async def trades(self) -> list[Trade]:
        return _typed(_TRADES, await self._call("GET", "/trades"), "trades")

    async def positions(self) -> Positions:
        return _typed(_one(Positions), await self._call("GET", "/portfolio/positions"), "positions")

    async def holdings(self) -> list[Holding]:
        return _typed(_HOLDINGS, await self._call("GET", "/portfolio/holdings"), "holdings")

    # market data
    async def instruments(self, exchange: str | None = None) -> bytes:
        """The instrument dump as Kite sends it (CSV); ticker.core.instruments reads it."""
        return await self._call("GET", f"/instruments/{exchange}" if exchange else "/instruments")

    async def historical_data(self, instrument_token: int, from_date: datetime, to_date: datetime,
                              interval: str, continuous: bool = False, oi: bool = False) -> list[Candle]:
        data = await self._call("GET", f"/instruments/historical/{instrument_token}/{interval}", {
            "from": from_date, "to": to_date, "interval": interval,
            "continuous": 1 if continuous else 0, "oi": 1 if oi else 0,
        })
        return _typed(_CANDLES, (data or {}).get("candles") or [], "candles")

    # Market data: lists longer than Kite takes in one call go as several calls, one after another;
    # `pace` (e.g. a rate-limit grant) is awaited before each. Answers are keyed "EXCHANGE:SYMBOL".
    async def quote(self, instruments: list[str], pace: Pace | None = None) -> dict[str, Quote]:
        return _typed(_QUOTES, await self._market("/quote", instruments, QUOTE_MAX_INSTRUMENTS, pace), "quotes")

    async def ltp(self, instruments: list[str], pace: Pace | None = None) -> dict[str, LtpQuote]:
        return _typed(_LTPS, await self._market("/quote/ltp", instruments, LTP_MAX_INSTRUMENTS, pace), "prices")

    async def ohlc(self, instruments: list[str], pace: Pace | None = None) -> dict[str, OhlcQuote]:
        return _typed(_OHLCS, await self._market("/quote/ohlc", instruments, OHLC_MAX_INSTRUMENTS, pace), "OHLC")

    async def _market(self, path: str, instruments: list[str], size: int, pace: Pace | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for chunk in _chunks(list(dict.fromkeys(instruments)), size):
            if pace is not None:
                await pace()
            out.update(await self._call("GET", path, {"i": chunk}) or {})
        return out

    # GTT (good till triggered): writes are order requests, so they take the order path's egress
    async def place_gtt(self, params: dict[str, Any], timeout: float | None = None) -> GttResult:
        """`params`: Kite's GTT form (type, condition and orders as JSON text)."""
        data = await self._call("POST", "/gtt/triggers", params, timeout, order_path=True)
        return _typed(_one(GttResult), data, "a placed GTT")

    async def modify_gtt(self, trigger_id: int, params: dict[str, Any], timeout: float | None = None) -> GttResult:
        data = await self._call("PUT", f"/gtt/triggers/{trigger_id}", params, timeout, order_path=True)
        return _typed(_one(GttResult), data, "a modified GTT")

    async def delete_gtt(self, trigger_id: int, timeout: float | None = None) -> GttResult:
        data = await self._call("DELETE", f"/gtt/triggers/{trigger_id}", None, timeout, order_path=True)
        return _typed(_one(GttResult), data, "a deleted GTT")

    async def gtts(self, timeout: float | None = None) -> list[Gtt]:
        """The account's GTTs, newest first."""
        return _typed(_GTTS, await self._call("GET", "/gtt/triggers", timeout=timeout), "GTTs")

    async def gtt(self, trigger_id: int, timeout: float | None = None) -> Gtt:
        return _typed(_one(Gtt), await self._call("GET", f"/gtt/triggers/{trigger_id}", timeout=timeout), "a GTT")

    # margin calculation
    async def order_margins(self, orders: list[dict[str, Any]], compact: bool = False,
                            timeout: float | None = None) -> list[OrderMargins]:
        """Margins of each order taken alone (positions it closes need none)."""
        data = await self._call("POST", "/margins/orders", {"mode": "compact" if compact else None}, timeout,
                                json_body=orders)
        return _typed(_ORDER_MARGINS, data, "order margins")

    async def basket_margins(self, orders: list[dict[str, Any]], consider_positions: bool = True,
                             compact: bool = False, timeout: float | None = None) -> BasketMargins:
        """Kite's basket margins: `initial` (each order alone), `final` (together, hedges counted),
        `orders` and `charges`; with `consider_positions` the open positions join `final`."""
        query = {"consider_positions": consider_positions, "mode": "compact" if compact else None}
        data = await self._call("POST", "/margins/basket", query, timeout, json_body=orders)
        return _typed(_one(BasketMargins), data, "basket margins")

    async def order_charges(self, orders: list[dict[str, Any]], timeout: float | None = None) -> list[OrderCharges]:
        """Charges of executed orders (each with its `average_price`), as Kite's contract note has them."""
        data = await self._call("POST", "/charges/orders", None, timeout, json_body=orders)
        return _typed(_ORDER_CHARGES, data, "order charges")

    # mutual funds: writes take the order path's egress, as order writes do
    async def mf_instruments(self, timeout: float | None = None) -> list[MfInstrument]:
        """Kite's MF instruments (CSV), read as the SDK reads them: flags 0/1, amounts as numbers."""
        body = await self._call("GET", "/mf/instruments", timeout=timeout)
        text = body.decode() if isinstance(body, bytes) else str(body)
        rows = list(csv.DictReader(io.StringIO(text.strip())))
        return _typed(_MF_INSTRUMENTS, rows, "MF instruments")

    async def place_mf_order(self, params: dict[str, Any], timeout: float | None = None) -> MfOrderResult:
        data = await self._call("POST", "/mf/orders", params, timeout, order_path=True)
        return _typed(_one(MfOrderResult), data, "a placed MF order")

    async def cancel_mf_order(self, order_id: str, timeout: float | None = None) -> MfOrderResult:
        data = await self._call("DELETE", f"/mf/orders/{order_id}", None, timeout, order_path=True)
        return _typed(_one(MfOrderResult), data, "a cancelled MF order")

    async def mf_orders(self, timeout: float | None = None) -> list[MfOrder]:
        return _typed(_MF_ORDERS, await self._call("GET", "/mf/orders", timeout=timeout), "MF orders")

    async def mf_order(self, order_id: str, timeout: float | None = None) -> MfOrder:
        return _typed(_one(MfOrder), await self._call("GET", f"/mf/orders/{order_id}", timeout=timeout), "an MF order")

    async def place_mf_sip(self, params: dict[str, Any], timeout: float | None = None) -> MfSipResult:
        data = await self._call("POST", "/mf/sips", params, timeout, order_path=True)
        return _typed(_one(MfSipResult), data, "a placed SIP")

    async def modify_mf_sip(self, sip_id: str, params: dict[str, Any], timeout: float | None = None) -> MfSipResult:
        data = await self._call("PUT", f"/mf/sips/{sip_id}", params, timeout, order_path=True)
        return _typed(_one(MfSipResult), data, "a modified SIP")

    async def cancel_mf_sip(self, sip_id: str, timeout: float | None = None) -> MfSipResult:
        data = await self._call("DELETE", f"/mf/sips/{sip_id}", None, timeout, order_path=True)
        return _typed(_one(MfSipResult), data, "a cancelled SIP")

    async def mf_sips(self, timeout: float | None = None) -> list[MfSip]:
        return _typed(_MF_SIPS, await self._call("GET", "/mf/sips", timeout=timeout), "SIPs")

    async def mf_sip(self, sip_id: str, timeout: float | None = None) -> MfSip:
        return _typed(_one(MfSip), await self._call("GET", f"/mf/sips/{sip_id}", timeout=timeout), "a SIP")

    async def mf_holdings(self, timeout: float | None = None) -> list[MfHolding]:
        return _typed(_MF_HOLDINGS, await self._call("GET", "/mf/holdings", timeout=timeout), "MF holdings")
