"""The stand-in's REST side driven by the real kiteconnect SDK: login, instruments, quotes, errors."""

from __future__ import annotations

import asyncio
import hashlib
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from ticker.core.instruments import SEG_INDICES, SEG_NFO

V3 = {"X-Kite-Version": "3"}


def _login_redirect(url: str, api_key: str, session: requests.Session | None = None) -> dict:
    r = (session or requests).get(f"{url}/connect/login", params={"api_key": api_key, "v": 3},
                                  allow_redirects=False, timeout=30)
    assert r.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlparse(r.headers["Location"]).query).items()}


async def test_login_redirect_and_generate_session(kitesim):
    acc = kitesim.account
    params = await asyncio.to_thread(_login_redirect, kitesim.url, acc.api_key)
    assert params["status"] == "success" and params["action"] == "login"
    kite = KiteConnect(acc.api_key, root=kitesim.url)
    session = await asyncio.to_thread(kite.generate_session, params["request_token"], acc.api_secret)
    assert session["user_id"] == acc.user_id and session["api_key"] == acc.api_key
    assert kite.access_token == session["access_token"] != acc.access_token
    profile = await asyncio.to_thread(kite.profile)
    assert profile["user_id"] == acc.user_id
    # the request token is single-use; the pre-issued token still works alongside the new one
    with pytest.raises(kex.TokenException):
        await asyncio.to_thread(kite.generate_session, params["request_token"], acc.api_secret)
    old = KiteConnect(acc.api_key, acc.access_token, root=kitesim.url)
    assert (await asyncio.to_thread(old.profile))["user_id"] == acc.user_id


async def test_wrong_checksum_is_refused(kitesim):
    acc = kitesim.account
    params = await asyncio.to_thread(_login_redirect, kitesim.url, acc.api_key)
    kite = KiteConnect(acc.api_key, root=kitesim.url)
    with pytest.raises(kex.TokenException, match="checksum"):
        await asyncio.to_thread(kite.generate_session, params["request_token"], "not-the-secret")


async def test_invalidate_access_token(kitesim):
    acc = kitesim.accounts[1]
    kite = KiteConnect(acc.api_key, acc.access_token, root=kitesim.url)
    assert await asyncio.to_thread(kite.invalidate_access_token) is True
    with pytest.raises(kex.TokenException) as err:
        await asyncio.to_thread(kite.orders)
    assert err.value.code == 403


async def test_totp_web_login_then_request_token(kitesim):
    acc = kitesim.account

    def flow() -> dict:
        s = requests.Session()
        r = s.post(f"{kitesim.url}/api/login", data={"user_id": acc.user_id, "password": acc.password})
        request_id = r.json()["data"]["request_id"]
        bad = s.post(f"{kitesim.url}/api/twofa", data={"user_id": acc.user_id, "request_id": request_id,
                                                       "twofa_value": "000000", "twofa_type": "totp"})
        assert bad.status_code == 403
        r = s.post(f"{kitesim.url}/api/twofa", data={
            "user_id": acc.user_id, "request_id": request_id, "twofa_type": "totp",
            "twofa_value": pyotp.TOTP(acc.totp_secret).now()})
        assert r.status_code == 200 and s.cookies.get("enctoken")
        return _login_redirect(kitesim.url, acc.api_key, s)

    params = await asyncio.to_thread(flow)
    checksum = hashlib.sha256((acc.api_key + params["request_token"] + acc.api_secret).encode()).hexdigest()
    r = await asyncio.to_thread(requests.post, f"{kitesim.url}/session/token", data={
        "api_key": acc.api_key, "request_token": params["request_token"], "checksum": checksum},
        headers=V3)
    assert r.json()["data"]["access_token"]


async def test_wrong_password_is_refused(kitesim):
    r = await asyncio.to_thread(requests.post, f"{kitesim.url}/api/login",
                                data={"user_id": kitesim.account.user_id, "password": "wrong"})
    assert r.status_code == 403 and r.json()["status"] == "error"


async def test_bad_token_is_403_token_exception(kitesim):
    kite = KiteConnect(kitesim.account.api_key, "not-a-token", root=kitesim.url)
    with pytest.raises(kex.TokenException) as err:
        await asyncio.to_thread(kite.positions)
    assert err.value.code == 403
    r = await asyncio.to_thread(requests.get, f"{kitesim.url}/orders", headers=V3)
    assert r.status_code == 403 and r.json()["error_type"] == "TokenException"


async def test_instruments_dump(kitesim):
    acc = kitesim.account
    kite = KiteConnect(acc.api_key, acc.access_token, root=kitesim.url)
    rows = await asyncio.to_thread(kite.instruments)
    by_token = {r["instrument_token"]: r for r in rows}
    assert by_token[256265]["tradingsymbol"] == "NIFTY 50" and by_token[256265]["segment"] == "INDICES"
    assert by_token[260105]["tradingsymbol"] == "NIFTY BANK"
    for r in rows:
        seg = r["instrument_token"] & 0xFF
        assert r["instrument_token"] >> 8 == int(r["exchange_token"])
        assert seg == (SEG_INDICES if r["segment"] == "INDICES" else SEG_NFO if r["exchange"] == "NFO" else 1)
    opts = [r for r in rows if r["instrument_type"] in ("CE", "PE")]
    nifty = [r for r in opts if r["name"] == "NIFTY"]
    # NSE's lots from the January 2026 series on (every contract listed today is of one)
    lots = {name: {r["lot_size"] for r in opts if r["name"] == name} for name in ("NIFTY", "BANKNIFTY")}
    assert lots == {"NIFTY": {65}, "BANKNIFTY": {30}} and {r["tick_size"] for r in opts} == {0.05}
    assert {r["lot_size"] for r in opts if r["name"] == "FINNIFTY"} == {60}
    assert {r["lot_size"] for r in opts if r["name"] == "MIDCPNIFTY"} == {120}
    assert len({r["expiry"] for r in nifty}) >= 4
    strikes = sorted({r["strike"] for r in nifty})
    assert all(b - a == 50 for a, b in zip(strikes, strikes[1:], strict=False)) and len(strikes) >= 41
    bank = sorted({r["strike"] for r in opts if r["name"] == "BANKNIFTY"})
    assert all(b - a == 100 for a, b in zip(bank, bank[1:], strict=False))
    nfo = await asyncio.to_thread(kite.instruments, "NFO")
    assert len(nfo) == len(rows) - sum(1 for r in rows if r["exchange"] == "NSE")


async def test_same_seed_same_instruments(kitesim_factory):
    a = await kitesim_factory(seed=11)
    b = await kitesim_factory(seed=11)
    c = await kitesim_factory(seed=12)
    ua, ub, uc = (s.state.universe for s in (a, b, c))
    assert ua.csv() == ub.csv()
    assert ua.token.tolist() == uc.token.tolist() or ua.csv() != uc.csv()


async def test_quotes(kitesim_factory):
    kitesim = await kitesim_factory(quote_rate_limit=0)  # four quote calls at once: shapes, not limits
    acc = kitesim.account
    kite = KiteConnect(acc.api_key, acc.access_token, root=kitesim.url)
    uni = kitesim.state.universe
    symbol = str(uni.symbol[10])
    quote = await asyncio.to_thread(kite.quote, ["NSE:NIFTY 50", f"NFO:{symbol}", "NFO:NOPE"])
    assert set(quote) == {"NSE:NIFTY 50", f"NFO:{symbol}"}
    q = quote[f"NFO:{symbol}"]
    assert len(q["depth"]["buy"]) == 5 and q["depth"]["sell"][0]["price"] > q["depth"]["buy"][0]["price"]
    assert quote["NSE:NIFTY 50"]["instrument_token"] == 256265
    ltp = await asyncio.to_thread(kite.ltp, "256265", "NSE:NIFTY BANK")
    assert ltp["256265"]["last_price"] > 1000 and ltp["NSE:NIFTY BANK"]["instrument_token"] == 260105
    ohlc = await asyncio.to_thread(kite.ohlc, f"NFO:{symbol}")
    assert set(ohlc[f"NFO:{symbol}"]["ohlc"]) == {"open", "high", "low", "close"}
    with pytest.raises(kex.InputException):
        await asyncio.to_thread(kite.ltp, [])


async def test_margins_positions_holdings(kitesim):
    acc = kitesim.account
    kite = KiteConnect(acc.api_key, acc.access_token, root=kitesim.url)
    margins = await asyncio.to_thread(kite.margins)
    assert margins["equity"]["enabled"] and margins["equity"]["net"] > 0
    assert (await asyncio.to_thread(kite.margins, "commodity"))["net"] == 0
    assert await asyncio.to_thread(kite.positions) == {"net": [], "day": []}
    assert await asyncio.to_thread(kite.holdings) == []


async def test_unknown_route_is_a_json_error(kitesim):
    r = await asyncio.to_thread(requests.get, f"{kitesim.url}/no/such/route")
    assert r.status_code == 404 and r.json()["status"] == "error"
