"""`/docs` (Swagger UI served locally, no key needed), `/` (the option-chain page, likewise) and
`POST /auth/token` (an API key traded for a short-lived JWT that opens `/ws/ticks?token=`)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime

import jwt
import pytest
from aiohttp import WSServerHandshakeError

from tests.web.conftest import ADMIN_KEY, API_KEY

JWT_SECRET = "s" * 32
AUDIENCE = "ticker-web"


async def _connected(api, path: str) -> dict:
    ws = await api.ws_connect(path)
    try:
        async with asyncio.timeout(30):
            while True:
                message = await ws.receive_json()
                if message["type"] == "connected":
                    return message
    finally:
        await ws.close()


async def _ws_refused(api, path: str) -> int:
    with pytest.raises(WSServerHandshakeError) as exc:
        await api.ws_connect(path)
    return exc.value.status


async def test_docs_and_their_assets_need_no_key_and_stay_local(make_api) -> None:
    api = await make_api(api_key=API_KEY, admin_api_key=ADMIN_KEY)
    page = await api.get("/docs")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/docs/static/") for a in assets), assets
    assert "http://" not in html and "https://" not in html and "//" not in html.replace("://", "")
    assert '"/openapi.json"' in html
    for asset in assets:
        resp = await api.get(asset)
        assert resp.status == 200, asset
        assert len(await resp.read()) > 0
    assert (await api.get("/docs/static/index.html")).status == 404  # only the listed files
    assert (await api.get("/docs/static/..%2F..%2Fopenapi.yaml")).status == 404
    assert (await api.get("/openapi.json")).status == 200
    assert (await api.get("/accounts")).status == 401  # the rest still needs a key


async def test_the_chain_page_and_its_files_need_no_key_and_stay_local(make_api) -> None:
    api = await make_api(api_key=API_KEY, admin_api_key=ADMIN_KEY)
    page = await api.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assets = re.findall(r'(?:src|href)="(/page/[^"]+)"', html)
    assert sorted(assets) == ["/page/chain.css", "/page/chain.js"]
    for asset in assets:
        resp = await api.get(asset)
        assert resp.status == 200 and len(await resp.read()) > 0, asset
    script = await (await api.get("/page/chain.js")).text()
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "") and "https://" not in script
    for path in ("/page/index.html", "/page/..%2Fapp.py", "/page/chain_view.py"):
        assert (await api.get(path)).status == 404, path  # only the listed files


async def test_the_docs_are_not_metered(make_api) -> None:
    api = await make_api(http_rate_limit_per_minute=2)
    for _ in range(3):
        for path in ("/docs", "/docs/static/swagger-ui.css", "/", "/page/chain.js"):
            assert (await api.get(path)).status == 200


async def test_a_key_buys_a_token_that_opens_the_tick_socket(make_api) -> None:
    api = await make_api(api_key=API_KEY, admin_api_key=ADMIN_KEY, jwt_secret=JWT_SECRET, jwt_audience=AUDIENCE)
    resp = await api.post("/auth/token", headers={"X-API-Key": API_KEY})
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    assert doc["token_type"] == "Bearer" and set(doc) == {"token", "expires_at", "token_type"}
    claims = jwt.decode(doc["token"], JWT_SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["sub"] == "trading" and claims["exp"] - claims["iat"] == 15 * 60
    assert datetime.fromisoformat(doc["expires_at"]).timestamp() == claims["exp"]
    connected = await _connected(api, f"/ws/ticks?token={doc['token']}")
    assert connected["user"] == {"sub": "trading", "via": "jwt"}
    # The same secret, an `exp` in the past: refused.
    expired = jwt.encode({**claims, "iat": claims["iat"] - 3600, "exp": int(time.time()) - 60}, JWT_SECRET,
                         algorithm="HS256")
    assert await _ws_refused(api, f"/ws/ticks?token={expired}") == 401


async def test_a_trading_token_reads_the_chain_and_opens_no_other_rest_route(make_api) -> None:
    api = await make_api(api_key=API_KEY, admin_api_key=ADMIN_KEY, jwt_secret=JWT_SECRET)
    token = (await (await api.post("/auth/token", headers={"X-API-Key": API_KEY})).json())["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    expiries = await api.get("/chain/expiries?underlying=NIFTY", headers=bearer)
    assert expiries.status == 200, await expiries.text()
    expiry = (await expiries.json())["expiries"][0]
    chain = await api.get(f"/chain?underlying=NIFTY&expiry={expiry}", headers=bearer)
    assert chain.status == 200 and (await chain.json())["expiry"] == expiry
    assert (await api.get(f"/chain?underlying=NIFTY&token={token}")).status == 401  # never from the URL
    forged = jwt.encode({"sub": "trading", "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256")
    refused = await api.get("/chain?underlying=NIFTY", headers={"Authorization": f"Bearer {forged}"})
    assert refused.status == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    for path in ("/accounts", "/dlq", "/subscriptions", "/orders"):
        assert (await api.get(path, headers={"Authorization": f"Bearer {token}"})).status == 401
        assert (await api.get(f"{path}?token={token}")).status == 401
    admin = await (await api.post("/auth/token", headers={"X-API-Key": ADMIN_KEY})).json()
    assert jwt.decode(admin["token"], JWT_SECRET, algorithms=["HS256"])["sub"] == "admin"


async def test_a_bad_key_gets_the_401_envelope(make_api) -> None:
    api = await make_api(api_key=API_KEY, jwt_secret=JWT_SECRET)
    for headers in ({"X-API-Key": "not-the-key"}, {}):
        resp = await api.post("/auth/token", headers=headers)
        assert resp.status == 401
        err = (await resp.json())["error"]
        assert err["code"] == "unauthorized" and err["details"] is None


async def test_without_a_jwt_secret_the_answer_names_it(make_api) -> None:
    api = await make_api(api_key=API_KEY, jwt_secret=None)
    resp = await api.post("/auth/token", headers={"X-API-Key": API_KEY})
    assert resp.status == 503
    err = (await resp.json())["error"]
    assert err["code"] == "jwt_unavailable" and "JWT_SECRET" in err["message"]
