"""Access-token jobs: `refresh_tokens` (automated TOTP login for accounts that opted in) and
`exchange_request_token` (the official redirect flow: the HTTP callback hands over a request token).

Either way the new token is exchanged with the api_secret, checked with a profile call, stored
through the secrets backend, and announced on the control channel so the streamer reconnects that
account. Secrets are registered with the log redactor before any call, and results and errors
carry only account ids and Kite's own messages.

A login that fails on the way (network trouble, a timeout, Kite's 429 or 5xx) is tried again: a few
times inside the job after short jittered pauses, then by arq (the job is deferred by
TOKEN_REFRESH_RETRY_SECONDS, doubled per try, capped at TOKEN_REFRESH_RETRY_MAX_SECONDS); after
that a streamer holding an account whose token is bad keeps asking. A login Kite refuses (wrong
password, TOTP secret or api_secret, or credentials missing) is recorded on the account
(`login_error`, shown in the streamer's /health), logged once with what to do, and not tried again
for TOKEN_LOGIN_REFUSED_RETRY_SECONDS unless the credentials are stored again or the run is forced:
Kite locks accounts after repeated wrong passwords.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Literal

from arq import Retry
from pydantic import BaseModel, Field, SecretStr

from ticker.core.contracts import LOGIN_REFUSED_REASON, ControlMessage
from ticker.infra.kite.limits import RateLimiter, budget_for
from ticker.infra.kite.login import LoginCredentials, LoginError, request_token
from ticker.infra.kite.rest import KiteApi, KiteException, TokenException, is_transient
from ticker.infra.queue.control import publish_control
from ticker.infra.runtime.logs import redact, register_secret
from ticker.infra.runtime.outage import jittered
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import KiteAccount, settings_account
from ticker.infra.stores.secrets import SecretsError
from ticker.jobs.context import Deps, deps

log = logging.getLogger(__name__)
LOGIN_TIMEOUT = 20.0
LOGIN_ATTEMPTS = 3  # per account and job run; then arq retries the job
LOGIN_PAUSE_SECONDS = (1.0, 5.0)  # between those attempts: first pause and cap (doubled, jittered)
FAILING_MEMORY_SECONDS = 7 * 86_400  # how long "renewal of this account is failing" is remembered


class TokenJobError(Exception):
    """A token could not be renewed; the message is safe to show."""


FAILURES = (LoginError, KiteException, TokenJobError, SecretsError)


class RefreshTokensPayload(BaseModel, extra="forbid"):
    account_id: str | None = Field(None, min_length=1, max_length=64)
    force: bool = False  # log in even when the current token still works or the last login was refused


class ExchangeTokenPayload(BaseModel, extra="forbid"):
    account_id: str = Field(min_length=1, max_length=64)
    request_token: SecretStr = Field(min_length=1, max_length=256)


class AccountOutcome(BaseModel):
    account_id: str
    outcome: Literal["renewed", "still_valid", "failed"]
    error: str | None = None
    # why it failed: "transient" (try again later) or "refused" (Kite refused the credentials)
    failure: Literal["transient", "refused"] | None = None


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


def retry_delay(settings: Settings, attempt: int) -> float:
    """The wait before try `attempt + 1` of a token refresh: exponential, jittered (x0.5..x1), capped."""
    return jittered(max(attempt - 1, 0), settings.token_refresh_retry_seconds,
                    settings.token_refresh_retry_max_seconds)


def _pause(attempt: int) -> float:
    first, cap = LOGIN_PAUSE_SECONDS
    return jittered(attempt - 1, first, cap)


def transient(exc: BaseException) -> bool:
    """Whether trying again later may work; False when Kite refused what it was given."""
    if isinstance(exc, LoginError):
        return exc.transient
    if isinstance(exc, KiteException):
        return is_transient(exc)
    return isinstance(exc, SecretsError)  # the secrets store failed, not the credentials


def fix_hint(account: KiteAccount) -> str:
    return (f"store the right password, TOTP secret and api_secret with `ticker accounts add "
            f"{account.account_id} --api-key {account.api_key} --auto-login` (or POST /accounts)")


# --- shared: a request token becomes a stored, announced access token --------------------------------
async def install_session(d: Deps, account: KiteAccount, request_token_value: str) -> None:
    api_secret = account.secret("api_secret")
    if not api_secret:
        raise TokenJobError(f"account {account.account_id!r} has no api_secret stored")
    limiter = RateLimiter(d.redis, d.names, d.settings)
    budget = budget_for(account.account_id, account.secret("user_id"))
    await limiter.acquire(budget, "api")
    api = KiteApi(d.kite_http, account.api_key)
    session = await api.generate_session(request_token_value, api_secret)
    access = str(session["access_token"])
    register_secret(access)
    await limiter.acquire(budget, "api")
    profile = await api.profile()  # proves the token works before anyone relies on it
    expected = account.secret("user_id")
    if expected and profile.get("user_id") != expected:
        raise TokenJobError(f"the new token of account {account.account_id!r} belongs to another Kite user")
    await d.accounts.set_token(account.account_id, access, "valid")
    if account.login_error is not None:  # the credentials work after all
        await d.accounts.set_login_error(account.account_id, None)
    await announce(d, account.account_id, "access token renewed")
    log.info("access token renewed", extra={"account": account.account_id})


async def announce(d: Deps, account_id: str, reason: str) -> None:
    await publish_control(d.redis, d.names, ControlMessage(kind="tokens", account_id=account_id, reason=reason))


async def token_works(d: Deps, account: KiteAccount) -> bool:
    token = account.secret("access_token")
    if not token:
        return False
    budget = budget_for(account.account_id, account.secret("user_id"))
    await RateLimiter(d.redis, d.names, d.settings).acquire(budget, "api")
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


class _Renewal:
    """One account's renewal within one job run."""

    def __init__(self, d: Deps, account: KiteAccount, force: bool) -> None:
        self.d, self.account, self.force = d, account, force
        self.id = account.account_id

    async def run(self) -> AccountOutcome:
        _register(self.account)
        if not self.force and self.account.login_blocked(self.d.settings.token_login_refused_retry_seconds):
            # Refused before and nothing changed since: that was reported then; do not ask Kite again.
            return self.outcome("failed", f"automated login refused earlier: {self.account.login_error}; "
                                          f"{fix_hint(self.account)}", "refused")
        for attempt in itertools.count(1):
            try:
                outcome = await self.once()
            except FAILURES as exc:
                message = redact(f"{exc.__class__.__name__}: {exc}")
                if not transient(exc):
                    return await self.refused(message)
                if attempt >= LOGIN_ATTEMPTS:
                    await self.failing(message)
                    return self.outcome("failed", message, "transient")
                log.info("token renewal failed on the way; trying again", extra={
                    "account": self.id, "error": message, "attempt": attempt})
                await asyncio.sleep(_pause(attempt))
                continue
            if await self.d.redis.delete(self._failing_key):
                log.info("token renewal works again", extra={"account": self.id})
            return outcome
        raise AssertionError("unreachable")

    @property
    def _failing_key(self) -> str:
        return self.d.names.key("token-renewal-failing", self.id)

    async def failing(self, message: str) -> None:
        """Warn once per outage, not at every retry of every job (the key outlives a long outage)."""
        if await self.d.redis.set(self._failing_key, b"1", nx=True, ex=FAILING_MEMORY_SECONDS):
            log.warning("token renewal failing; it is retried with back-off", extra={
                "account": self.id, "error": message})

    async def once(self) -> AccountOutcome:
        works = await token_works(self.d, self.account)
        if works and not self.force:
            if self.account.token_state != "valid":
                await self.d.accounts.set_token_state(self.id, "valid")
                if self.account.token_state == "invalid":  # a streamer may have given up on it: try again
                    await announce(self.d, self.id, "access token still valid")
            return self.outcome("still_valid")
        if not works and self.account.token_state != "invalid":  # only a token Kite refused is marked bad
            await self.d.accounts.set_token_state(self.id, "invalid")
            self.account = self.account.model_copy(update={"token_state": "invalid"})
        token = await request_token(self.d.settings.kite_login_root, credentials(self.account), timeout=LOGIN_TIMEOUT)
        await install_session(self.d, self.account, token)
        return self.outcome("renewed")

    async def refused(self, message: str) -> AccountOutcome:
        """Kite refused the credentials: record it, and say so once (not at every slow retry)."""
        await self.d.accounts.set_login_error(self.id, message)
        if message != self.account.login_error:
            log.warning("automated login refused by Kite; not retried until the credentials change",
                        extra={"account": self.id, "error": message, "action": fix_hint(self.account)})
            await announce(self.d, self.id, LOGIN_REFUSED_REASON)
        return self.outcome("failed", f"{message}; {fix_hint(self.account)}", "refused")

    def outcome(self, outcome: Literal["renewed", "still_valid", "failed"], error: str | None = None,
                failure: Literal["transient", "refused"] | None = None) -> AccountOutcome:
        return AccountOutcome(account_id=self.id, outcome=outcome, error=error, failure=failure)


async def renew(d: Deps, account: KiteAccount, force: bool) -> AccountOutcome:
    return await _Renewal(d, account, force).run()


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
    job_try = ctx.get("job_try")  # None when called outside arq: nobody to retry it
    # ORDER_MAX_TRIES is the worker's max_tries on the default queue; past it arq would fail the job.
    if any(o.failure == "transient" for o in outcomes) and job_try is not None \
            and job_try < d.settings.order_max_tries:
        # Accounts renewed meanwhile only cost a profile call on the next try.
        raise Retry(defer=retry_delay(d.settings, job_try))
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
