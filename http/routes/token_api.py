"""`POST /auth/token`: the API key (checked by the auth middleware) traded for a short-lived JWT.

Browsers cannot send headers on a WebSocket upgrade, so a page fetches a token here and opens
`/ws/ticks?token=<jwt>`. The token names which key asked for it (`sub`: `trading` or `admin`) and
opens the tick socket and, as `Authorization: Bearer`, the chain reads (`GET /chain`,
`GET /chain/expiries`); every other REST route keeps asking for the key itself.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from ticker.http.middleware.auth import API_KEY_HEADER, ApiKeys, issue_token
from ticker.http.middleware.errors import ApiError, json_response
from ticker.http.state import SETTINGS

routes = web.RouteTableDef()


@routes.post("/auth/token")
async def mint_token(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    # The middleware let the request through, so the key is good (or the server has none: "open").
    role = ApiKeys(settings).role(request.headers.get(API_KEY_HEADER)) or "open"
    try:
        token, expires = issue_token(settings, role)
    except LookupError as exc:
        raise ApiError(503, "jwt_unavailable", f"{exc}; set JWT_SECRET (the same on every web replica)") from None
    expires_at = datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z")
    return json_response({"token": token, "expires_at": expires_at, "token_type": "Bearer"},
                         headers={"Cache-Control": "no-store"})
