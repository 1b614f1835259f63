"""Access-token jobs: `refresh_tokens` (automated TOTP login for accounts that opted in) and
`exchange_request_token` (the official redirect flow: the HTTP callback hands over a request token).

Either way the new token is exchanged with the api_secret, checked with a profile call, stored
through the secrets backend, and announced on the control channel so the streamer reconnects that
account. Secrets are registered with the log redactor before any call, and results and errors
carry only account ids and Kite's own messages.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr

from ticker.core.contracts import ControlMessage
from ticker.infra.accounts import KiteAccount, settings_account
from ticker.infra.control import publish_control
from ticker.infra.kite_login import LoginCredentials, LoginError, request_token
from ticker.infra.kite_rest import KiteApi, KiteException, TokenException
from ticker.infra.logs import redact, register_secret
from ticker.infra.ratelimit import RateLimiter
from ticker.infra.secrets import SecretsError
from ticker.jobs.context import Deps, deps

log = logging.getLogger(__name__)
LOGIN_TIMEOUT = 20.0


class TokenJobError(Exception):
    """A token could not be renewed; the message is safe to show."""


class RefreshTokensPayload(BaseModel, extra="forbid"):
    account_id: str | None = Field(None, min_length=1, max_length=64)
    force: bool = False  # log in even when the current token still works


class ExchangeTokenPayload(BaseModel, extra="forbid"):
    account_id: str = Field(min_length=1, max_length=64)
    request_token: SecretStr = Field(min_length=1, max_length=256)


class AccountOutcome(BaseModel):
    account_id: str
    outcome: Literal["renewed", "still_valid", "failed"]
    error: str | None = None


class RefreshTokensResult(BaseModel):
    accounts: list[AccountOutcome]
    renewed: int
    failed: int


def _register(account: KiteAccount) -> None:
    for name in ("api_secret", "access_token", "user_id", "password", "totp_secret"):
        register_secret(account.secret(name))


async def _store_ready(d: Deps) -> None:
    if not d.accounts.configured:
        raise TokenJobError("set ACCOUNT_ENCRYPTION_KEY (or SECRETS_BACKEND=aws): tokens are stored encrypted")


# --- shared: a request token becomes a stored, announced access token --------------------------------
async def install_session(d: Deps, account: KiteAccount, request_token_value: str) -> None:
    api_secret = account.secret("api_secret")
    if not api_secret:
        raise TokenJobError(f"account {account.account_id!r} has no api_secret stored")
    limiter = RateLimiter(d.redis, d.names, d.settings)
    await limiter.acquire(account.account_id, "api")
    api = KiteApi(d.kite_http, account.api_key)
    session = await api.generate_session(request_token_value, api_secret)
    access = str(session["access_token"])
    register_secret(access)
    await limiter.acquire(account.account_id, "api")
    profile = await api.profile()  # proves the token works before anyone relies on it
    expected = account.secret("user_id")
    if expected and profile.get("user_id") != expected:
        raise TokenJobError(f"the new token of account {account.account_id!r} belongs to another Kite user")
    await d.accounts.set_token(account.account_id, access, "valid")
    await publish_control(d.redis, d.names, ControlMessage(
        kind="tokens", account_id=account.account_id, reason="access token renewed"))
    log.info("access token renewed", extra={"account": account.account_id})


async def token_works(d: Deps, account: KiteAccount) -> bool:
    token = account.secret("access_token")
    if not token:
        return False
    await RateLimiter(d.redis, d.names, d.settings).acquire(account.account_id, "api")
    try:
        await KiteApi(d.kite_http, account.api_key, token).profile()
    except TokenException:
        return False
    return True


# --- automated login ------------------------------------------------------------------------------
def credentials(account: KiteAccount) -> LoginCredentials:
    values = {n: account.secret(n) for n in ("user_id", "password", "totp_secret")}
    missing = [n for n, v in values.items() if not v]
    if missing:
        raise TokenJobError(f"automated login for {account.account_id!r} needs {', '.join(missing)} stored")
    return LoginCredentials(api_key=account.api_key, **values)  # type: ignore[arg-type]


async def renew(d: Deps, account: KiteAccount, force: bool) -> AccountOutcome:
    _register(account)
    works: bool | None = None  # None: unknown (Kite could not be asked)
    try:
        works = await token_works(d, account)
        if works and not force:
            if account.token_state != "valid":
                await d.accounts.set_token_state(account.account_id, "valid")
            return AccountOutcome(account_id=account.account_id, outcome="still_valid")
        token = await request_token(d.settings.kite_login_root, credentials(account), timeout=LOGIN_TIMEOUT)
        await install_session(d, account, token)
        return AccountOutcome(account_id=account.account_id, outcome="renewed")
    except (LoginError, KiteException, TokenJobError, SecretsError) as exc:
        message = redact(f"{exc.__class__.__name__}: {exc}")
        log.warning("token renewal failed", extra={"account": account.account_id, "error": message})
        if works is False:  # only a token Kite refused is marked bad; a network failure says nothing
            await d.accounts.set_token_state(account.account_id, "invalid")
        return AccountOutcome(account_id=account.account_id, outcome="failed", error=message)


async def refresh_tokens(ctx: dict[str, Any], payload: dict[str, Any] | None = None) -> dict[str, Any]:
    d = deps(ctx)
    req = RefreshTokensPayload.model_validate(payload or {})
    await _store_ready(d)
    if req.account_id:
        account = await d.accounts.get(req.account_id)
        if account is None:
            raise TokenJobError(f"no stored account {req.account_id!r}")
        if not account.auto_login:
            raise TokenJobError(f"account {req.account_id!r} has no automated login; "
                                "renew it through the Kite login redirect")
        accounts = [account]
    else:
        accounts = [a for a in await d.accounts.list() if a.auto_login]
    # One at a time: logins are rare and Kite's login endpoints are not for bursts.
    outcomes = [await renew(d, a, req.force) for a in accounts]
    if req.account_id and outcomes[0].outcome == "failed":
        raise TokenJobError(outcomes[0].error or "token renewal failed")
    return RefreshTokensResult(
        accounts=outcomes, renewed=sum(o.outcome == "renewed" for o in outcomes),
        failed=sum(o.outcome == "failed" for o in outcomes),
    ).model_dump(mode="json")


# --- the official redirect flow ---------------------------------------------------------------------
async def exchange_request_token(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    d = deps(ctx)
    req = ExchangeTokenPayload.model_validate(payload)
    register_secret(req.request_token.get_secret_value())
    await _store_ready(d)
    account = await d.accounts.get(req.account_id)
    if account is None:
        single = settings_account(d.settings)
        if single is None or single.account_id != req.account_id:
            raise TokenJobError(f"no account {req.account_id!r}; add it with `ticker accounts add`")
        await d.accounts.upsert(single)  # the settings account gets a row to hold its token
        account = single
    _register(account)
    try:
        await install_session(d, account, req.request_token.get_secret_value())
    except KiteException as exc:
        raise TokenJobError(redact(f"Kite refused the request token for {req.account_id!r}: {exc}")) from None
    return {"account_id": account.account_id, "token_state": "valid"}


FUNCTIONS = [refresh_tokens, exchange_request_token]
