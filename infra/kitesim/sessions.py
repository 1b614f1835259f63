"""Accounts and sessions as Kite keeps them: request tokens, access tokens, the TOTP web login.

Every account starts with its pre-issued access token (see config.py). A login adds a new token;
older tokens of that api_key stay valid until invalidated (DELETE /session/token) or expired over
the admin API, as on Kite. Every store here is bounded.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from datetime import datetime

import pyotp

from ticker.core.clock import IST
from ticker.infra.kitesim.config import SimAccount
from ticker.infra.kitesim.envelopes import KiteError, input_error, token_error

TOKENS_PER_KEY = 64
PENDING_MAX = 1024
REQUEST_TOKEN_TTL = 300.0


def _bounded_put(store: OrderedDict, key: str, value: object) -> None:
    store[key] = value
    if len(store) > PENDING_MAX:
        store.popitem(last=False)


class AuthBook:
    """Who may call: accounts by api_key, live access tokens, pending logins."""

    def __init__(self, accounts: list[SimAccount]) -> None:
        self.accounts = {a.api_key: a for a in accounts}
        self.by_user = {a.user_id: a for a in accounts}
        self._owner: dict[str, str] = {}  # access_token -> api_key
        self._issued: dict[str, deque[str]] = {a.api_key: deque() for a in accounts}
        self._request_tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._login_requests: OrderedDict[str, str] = OrderedDict()  # request_id -> user_id
        self._web_sessions: OrderedDict[str, str] = OrderedDict()  # enctoken -> user_id
        for a in accounts:
            self._add_token(a.api_key, a.access_token)

    def _add_token(self, api_key: str, token: str) -> None:
        issued = self._issued[api_key]
        issued.append(token)
        self._owner[token] = api_key
        if len(issued) > TOKENS_PER_KEY:
            self._owner.pop(issued.popleft(), None)

    # --- checks ----------------------------------------------------------------------------------
    def account_for(self, api_key: str, access_token: str) -> SimAccount | None:
        owner = self._owner.get(access_token)
        if owner is None or not hmac.compare_digest(owner, api_key):
            return None
        return self.accounts[owner]

    def check_header(self, header: str | None) -> SimAccount:
        """`Authorization: token api_key:access_token` -> the account, else TokenException."""
        if not header or not header.startswith("token ") or ":" not in header:
            raise token_error()
        api_key, _, access_token = header[len("token "):].strip().partition(":")
        account = self.account_for(api_key, access_token)
        if account is None:
            raise token_error()
        return account

    def require_key(self, api_key: str | None) -> SimAccount:
        if not api_key or api_key not in self.accounts:
            raise input_error("Invalid `api_key`.")
        return self.accounts[api_key]

    # --- the official flow -----------------------------------------------------------------------
    def issue_request_token(self, api_key: str) -> str:
        self.require_key(api_key)
        token = secrets.token_urlsafe(24)
        _bounded_put(self._request_tokens, token, (api_key, time.monotonic()))
        return token

    def exchange(self, api_key: str, request_token: str, checksum: str) -> dict:
        """POST /session/token: a one-time request token + checksum -> a new session."""
        account = self.require_key(api_key)
        pending = self._request_tokens.pop(request_token, None)
        if pending is None or pending[0] != api_key or time.monotonic() - pending[1] > REQUEST_TOKEN_TTL:
            raise token_error("Token is invalid or has expired.")
        expected = hashlib.sha256((api_key + request_token + account.api_secret).encode()).hexdigest()
        if not hmac.compare_digest(expected, checksum or ""):
            raise token_error("Invalid `checksum`.")
        access_token = secrets.token_hex(16)
        self._add_token(api_key, access_token)
        return session_payload(account, access_token)

    def invalidate(self, api_key: str, access_token: str) -> bool:
        if self._owner.get(access_token) != api_key:
            return False
        self._owner.pop(access_token, None)
        return True

    def expire(self, api_key: str | None = None) -> int:
        """Invalidate every access token of one api_key (or of all); returns how many."""
        keys = [api_key] if api_key else list(self.accounts)
        count = 0
        for key in keys:
            if key not in self._issued:
                raise input_error(f"unknown api_key {key!r}")
            for token in self._issued[key]:
                count += self._owner.pop(token, None) is not None
            self._issued[key].clear()
        return count

    def live_tokens(self, api_key: str) -> list[str]:
        return [t for t in self._issued.get(api_key, ()) if t in self._owner]

    # --- the web login that TOTP automation drives ------------------------------------------------
    def password_login(self, user_id: str, password: str) -> str:
        account = self.by_user.get(user_id or "")
        if account is None or not hmac.compare_digest(account.password, password or ""):
            raise KiteError(403, "InputException", "Invalid `user_id` or `password`.")
        request_id = secrets.token_urlsafe(16)
        _bounded_put(self._login_requests, request_id, user_id)
        return request_id

    def twofa(self, user_id: str, request_id: str, value: str) -> str:
        if self._login_requests.get(request_id or "") != user_id:
            raise KiteError(403, "TokenException", "Login request expired. Please login again.")
        account = self.by_user[user_id]
        if not pyotp.TOTP(account.totp_secret).verify(str(value or ""), valid_window=1):
            raise KiteError(403, "TwoFAException", "Invalid TOTP.")
        self._login_requests.pop(request_id, None)
        enctoken = secrets.token_urlsafe(24)
        _bounded_put(self._web_sessions, enctoken, user_id)
        return enctoken

    def web_user(self, enctoken: str | None) -> str | None:
        return self._web_sessions.get(enctoken or "")


def session_payload(account: SimAccount, access_token: str) -> dict:
    """Kite's POST /session/token data."""
    return {
        "user_type": "individual",
        "email": f"{account.user_id.lower()}@example.com",
        "user_name": account.user_name,
        "user_shortname": account.user_name.split()[0],
        "broker": "ZERODHA",
        "exchanges": ["NSE", "NFO", "BSE", "BFO", "CDS", "MCX"],
        "products": ["CNC", "NRML", "MIS", "BO", "CO"],
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
        "avatar_url": None,
        "user_id": account.user_id,
        "api_key": account.api_key,
        "access_token": access_token,
        "public_token": hashlib.md5(access_token.encode()).hexdigest(),
        "refresh_token": "",
        "enctoken": secrets.token_urlsafe(24),
        "login_time": datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S"),
        "meta": {"demat_consent": "consent"},
    }


def profile_payload(account: SimAccount) -> dict:
    """Kite's GET /user/profile data."""
    full = session_payload(account, "")
    keep = ("user_id", "user_type", "email", "user_name", "user_shortname", "broker", "exchanges",
            "products", "order_types", "avatar_url", "meta")
    return {k: full[k] for k in keep}
