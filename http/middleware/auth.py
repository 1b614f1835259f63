"""Who may call: API keys for the REST surface, a JWT (or an API key) for WebSocket clients.

Two keys, both sent as `X-API-Key`. The trading key (API_KEY) opens every route but the admin ones:
Kite accounts, on-demand refreshes and the dead-letter queue (listing shows every account's failed
orders, a replay places them again). Those need the admin key (ADMIN_API_KEY), which also opens
everything else; a trading key there is a 403. Outside production, a server without an admin key
lets the trading key (or, with no key at all, anyone) use the admin routes too, so a development
setup keeps working with one key. Keys are compared in constant time.

`POST /auth/token` trades an API key for a short-lived HS256 JWT signed with JWT_SECRET, for browsers
(which cannot send headers on a WebSocket upgrade). Such a token opens `/ws/ticks` and, sent as
`Authorization: Bearer`, the chain reads (`TOKEN_PATHS`: the same chains the socket streams to it);
every other REST route takes API keys alone, so a trading key's token can never reach an admin route.

JWTs are HS256 with JWT_SECRET or RS256 against the keys published at JWT_JWKS_URL (fetched without
blocking the loop, cached, refetched at most every `JWKS_MIN_REFRESH` seconds when an unknown key
id shows up so a flood of bad tokens cannot turn into a flood of fetches).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any, Literal

import aiohttp
import jwt
from aiohttp import web

from ticker.http.keys import Handler
from ticker.http.middleware.errors import ApiError
from ticker.infra.runtime.settings import Settings

API_KEY_HEADER = "X-API-Key"
# Reachable without the API key: probes, scrapers, the spec, and Kite's login redirect (a browser
# GET that cannot carry headers; the request token it brings is useless without our api_secret).
# /ws/ticks authenticates itself (JWT or API key) before the upgrade; Kite's order postbacks
# (/kite/postback) prove themselves by their checksum.
# The API docs page (its assets under /docs/static/) only shows the spec, which is open already;
# `/`, the option-chain page (its files under /page/), holds no secret: it asks for the key itself.
OPEN_PATHS = frozenset({"/health", "/metrics", "/openapi.json", "/auth/kite/callback", "/ws/ticks",
                        "/kite/postback", "/", "/docs"})
OPEN_PREFIXES = ("/docs/static/", "/page/")
# Read-only routes a JWT also opens (`Authorization: Bearer`, never `?token=`: URLs end up in logs).
# They show what `/ws/ticks` already streams to a token holder, so a browser page needs its key only to
# renew the token.
TOKEN_PATHS = frozenset({"/chain", "/chain/expiries"})
# First path segments of the routes that need the admin key.
ADMIN_SECTIONS = frozenset({"accounts", "admin", "dlq"})
JWKS_TTL = 300.0
TOKEN_TTL = 15 * 60  # seconds a token from POST /auth/token lives: enough to open a socket, short if leaked
JWKS_MIN_REFRESH = 30.0

Role = Literal["admin", "trading"]


class AuthError(Exception):
    """A credential was missing or wrong; the message is safe to show the caller."""


class ForbiddenError(AuthError):
    """A valid credential that does not open this route."""


def key_matches(expected: str, presented: str | None) -> bool:
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def is_open_path(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def is_admin_path(path: str) -> bool:
    return path.split("/", 2)[1] in ADMIN_SECTIONS


class ApiKeys:
    """The configured keys and what each opens."""

    def __init__(self, settings: Settings) -> None:
        self.trading = settings.api_key_value
        self.admin = settings.admin_api_key_value

    @property
    def any(self) -> bool:
        return self.trading is not None or self.admin is not None

    def role(self, presented: str | None) -> Role | None:
        """Whose key `presented` is (both keys are always compared, so timing tells nothing)."""
        admin = self.admin is not None and key_matches(self.admin, presented)
        trading = self.trading is not None and key_matches(self.trading, presented)
        return "admin" if admin else "trading" if trading else None

    def check(self, presented: str | None, admin_route: bool) -> None:
        """Nothing when `presented` opens the route; AuthError (401) or ForbiddenError (403) otherwise."""
        if admin_route and self.admin is not None:
            required: str | None = self.admin
        else:  # a trading route, or an admin route on a server without an admin key (not production)
            required = self.trading
        if required is None:
            return
        if presented is None:
            raise AuthError(f"missing {API_KEY_HEADER} header")
        role = self.role(presented)
        if role is None:
            raise AuthError("invalid API key")
        if admin_route and role != "admin" and self.admin is not None:
            raise ForbiddenError("this route needs the admin key (ADMIN_API_KEY); a trading key cannot use it")


def api_key_middleware(settings: Settings):
    keys = ApiKeys(settings)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_open_path(request.path):
            return await handler(request)
        token = _bearer(request) if request.path in TOKEN_PATHS else None
        try:
            if token is not None and API_KEY_HEADER not in request.headers:
                await _check_token(request, token)
            else:
                keys.check(request.headers.get(API_KEY_HEADER), is_admin_path(request.path))
        except ForbiddenError as exc:
            raise ApiError(403, "forbidden", str(exc)) from None
        except AuthError as exc:
            scheme = "Bearer" if token is not None else "ApiKey"
            raise ApiError(401, "unauthorized", str(exc), headers={"WWW-Authenticate": scheme}) from None
        return await handler(request)

    return middleware


def _bearer(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without one."""
    auth = request.headers.get("Authorization", "")
    if not auth.lower().startswith("bearer "):
        return None
    return auth[7:].strip() or None


async def _check_token(request: web.Request, token: str) -> None:
    verifier = request.app.get(JWT_VERIFIER)
    if verifier is None or not verifier.enabled:
        raise AuthError("JWT authentication is not configured; use the API key")
    await verifier.verify(token)


class JwksCache:
    """RS256 public keys by key id, from a JWKS URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._keys: dict[str | None, Any] = {}  # by "kid"; None for a key published without one
        self._fetched_at: float | None = None  # None: never fetched
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def key(self, kid: str | None) -> Any:
        age = None if self._fetched_at is None else time.monotonic() - self._fetched_at
        if age is None or age > JWKS_TTL or (kid not in self._keys and age > JWKS_MIN_REFRESH):
            await self._refresh()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if kid is None or kid not in self._keys:
            raise AuthError("token signed by an unknown key")
        return self._keys[kid]

    async def _refresh(self) -> None:
        async with self._lock:
            fresh = self._fetched_at is not None and time.monotonic() - self._fetched_at <= JWKS_MIN_REFRESH
            if fresh and self._keys:  # another caller refreshed while we waited for the lock
                return
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
            try:
                async with self._session.get(self.url) as resp:
                    resp.raise_for_status()
                    doc = await resp.json(content_type=None)
                keyset = jwt.PyJWKSet.from_dict(doc)
            except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
                self._fetched_at = time.monotonic()  # back off; keep serving the keys we had
                raise AuthError(f"cannot load signing keys: {type(exc).__name__}") from None
            # A key without "kid" is only usable when it is the only one published.
            self._keys = {k.key_id: k.key for k in keyset.keys}
            self._fetched_at = time.monotonic()


class JwtVerifier:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.audience = settings.jwt_audience
        self.jwks = JwksCache(settings.jwt_jwks_url) if settings.jwt_jwks_url else None

    @property
    def enabled(self) -> bool:
        return self.secret is not None or self.jwks is not None

    async def close(self) -> None:
        if self.jwks is not None:
            await self.jwks.close()

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; AuthError when it is not one we issued or it has expired."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if alg == "HS256" and self.secret is not None:
            key: Any = self.secret
        elif alg == "RS256" and self.jwks is not None:
            key = await self.jwks.key(header.get("kid"))
        else:
            raise AuthError(f"token algorithm {alg!r} is not accepted")
        try:
            return jwt.decode(token, key, algorithms=[alg], audience=self.audience,
                              options={"require": ["exp"], "verify_aud": self.audience is not None})
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None


JWT_VERIFIER = web.AppKey("jwt_verifier", JwtVerifier)


def issue_token(settings: Settings, subject: str, now: float | None = None) -> tuple[str, int]:
    """A JWT for `subject` and when it expires (Unix seconds), signed with JWT_SECRET.

    Replicas verify each other's tokens, so the secret must be the deployment's: without it there
    is nothing to sign with (never a made-up per-process secret)."""
    if settings.jwt_secret is None:
        raise LookupError("tokens cannot be issued: the server has no JWT_SECRET configured")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "iat": issued, "exp": issued + TOKEN_TTL}
    if settings.jwt_audience is not None:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256"), claims["exp"]


async def authenticate_ws(settings: Settings, verifier: JwtVerifier, request: web.Request) -> dict[str, Any]:
    """The identity of a WebSocket client, from `?token=` / `Authorization: Bearer` JWT or the API key."""
    token = request.query.get("token")
    if token is None:
        token = _bearer(request)
    if token:
        if not verifier.enabled:
            raise AuthError("JWT authentication is not configured; use the API key")
        claims = await verifier.verify(token)
        return {"sub": claims.get("sub"), "via": "jwt"}
    keys = ApiKeys(settings)
    presented = request.headers.get(API_KEY_HEADER)
    if presented is not None and keys.any:
        keys.check(presented, admin_route=False)  # a wrong key is refused, not ignored
        if keys.role(presented) is not None:
            return {"sub": "api-key", "via": "api_key"}
    if keys.trading is None and not verifier.enabled:
        return {"sub": None, "via": "open"}
    raise AuthError("a JWT (?token=) or the API key is required")
