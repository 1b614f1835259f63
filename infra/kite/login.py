"""Kite's web login driven over HTTP, for accounts that opted into automated token renewal.

The same steps a browser takes on kite.zerodha.com: POST /api/login (user id + password) gives a
request id; POST /api/twofa with the current TOTP sets the session cookies; GET /connect/login for
the app then redirects (possibly several times) to the app's redirect URL carrying a one-time
`request_token`, which `generate_session` exchanges for an access token. The redirect URL itself is
never fetched: the token is read from the Location header.

Every session here is private to one login (its own cookie jar) and closed at the end. Messages
never contain the password, TOTP, cookies or request token.

A failure is `transient` when trying again later may work (network trouble, a timeout, HTTP 429 or
5xx, an answer that makes no sense); otherwise Kite refused what it was given (wrong user id,
password, TOTP or api_key: its InputException / TokenException / TwoFAException) and only new
credentials will help.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import orjson
import pyotp

from ticker.infra.runtime.logs import redact, register_secret

MAX_REDIRECTS = 10
_REDIRECT = frozenset({301, 302, 303, 307, 308})


class LoginError(Exception):
    """The automated login failed; `step` says where (login, twofa, authorize), `transient` whether
    trying again later may work."""

    def __init__(self, step: str, message: str, *, transient: bool = False) -> None:
        super().__init__(f"Kite login failed at {step}: {redact(message)}")
        self.step = step
        self.transient = transient


def _transient_status(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass(frozen=True)
class LoginCredentials:
    api_key: str
    user_id: str
    password: str
    totp_secret: str

    def totp(self) -> str:
        try:
            return pyotp.TOTP(self.totp_secret).now()
        except Exception:
            raise LoginError("twofa", "the stored TOTP secret is not valid base32 of at least 112 bits") from None


async def request_token(login_root: str, creds: LoginCredentials, *, timeout: float = 15.0) -> str:
    """Run the web login and return a fresh request token for `creds.api_key`."""
    for value in (creds.password, creds.totp_secret, creds.user_id):
        register_secret(value)
    root = login_root.rstrip("/")
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: also keep cookies of IP-address hosts
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=timeout),
                                     headers={"X-Kite-Version": "3"}) as session:
        login = await _post(session, f"{root}/api/login", "login",
                            {"user_id": creds.user_id, "password": creds.password})
        request_id = login.get("request_id")
        if not request_id:
            raise LoginError("login", "Kite answered without a request_id", transient=True)
        await _post(session, f"{root}/api/twofa", "twofa", {
            "user_id": creds.user_id, "request_id": request_id,
            "twofa_value": creds.totp(), "twofa_type": "totp",
        })
        token = await _follow_to_token(session, f"{root}/connect/login?{urlencode({'v': 3, 'api_key': creds.api_key})}")
    register_secret(token)
    return token


async def _post(session: aiohttp.ClientSession, url: str, step: str, form: dict[str, str]) -> dict:
    try:
        async with session.post(url, data=form) as resp:
            body = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LoginError(step, f"{exc.__class__.__name__} talking to Kite", transient=True) from None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise LoginError(step, f"unexpected answer (HTTP {status})", transient=True) from None
    if not isinstance(doc, dict):
        raise LoginError(step, f"unexpected answer (HTTP {status})", transient=True)
    if status >= 400 or doc.get("status") != "success":
        raise LoginError(step, f"{doc.get('error_type', 'error')}: {doc.get('message', f'HTTP {status}')}",
                         transient=_transient_status(status) or status < 400)
    return doc.get("data") or {}


async def _follow_to_token(session: aiohttp.ClientSession, url: str) -> str:
    for _ in range(MAX_REDIRECTS):
        try:
            async with session.get(url, allow_redirects=False) as resp:
                status, location, body = resp.status, resp.headers.get("Location"), await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LoginError("authorize", f"{exc.__class__.__name__} talking to Kite", transient=True) from None
        if status not in _REDIRECT or not location:
            raise LoginError("authorize", _describe(status, body), transient=_transient_status(status))
        url = urljoin(url, location)
        query = parse_qs(urlsplit(url).query)
        if "request_token" in query:
            if query.get("status", ["success"])[0] != "success":
                raise LoginError("authorize", f"Kite redirected with status={query['status'][0]}")
            return query["request_token"][0]
    raise LoginError("authorize", f"no request_token after {MAX_REDIRECTS} redirects")


def _describe(status: int, body: bytes) -> str:
    """Why Kite did not redirect: its JSON error when it sent one, else the status."""
    try:
        doc = orjson.loads(body)
        return f"{doc.get('error_type', 'error')}: {doc.get('message', '')}"
    except (orjson.JSONDecodeError, AttributeError):
        return f"HTTP {status} without a redirect to the app (is the app authorised for this user?)"
