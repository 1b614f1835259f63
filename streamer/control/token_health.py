"""Access-token health per account, what happens when Kite refuses one, and asking for a refresh.

A 403 on the ticker handshake marks that token bad (by its fingerprint and when it was stored,
never the token itself), so the account drops out of the plan and its instruments fail over. The
rejection is reported: token_state 'invalid' in Postgres (when the account lives there) and a
`tokens` control message so every replica re-plans. The account comes back when it carries a
different token, when its token is stored again (even the same value), or when a `tokens` control
message names it with anything but a problem report.

While an account this replica holds has no working token and has automated login, a token refresh
is asked for: at once, then again after TOKEN_REFRESH_RETRY_SECONDS, doubled per ask with jitter up
to TOKEN_REFRESH_RETRY_MAX_SECONDS, until it works. Every ask is a job of its own, so none is
dropped as a duplicate of an older one, but no ask is made while the previous one is still queued,
waiting to retry or running. An account whose login Kite refused (`login_error`: wrong password,
TOTP or api_secret) is not asked for until its credentials are stored again or
TOKEN_LOGIN_REFUSED_RETRY_SECONDS have passed.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import JOB_REFRESH_TOKENS, TOKEN_REFUSED_REASON, ControlMessage, Names
from ticker.infra.queue.control import publish_control
from ticker.infra.queue.enqueue import derived_job_id, enqueue, unfinished
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore, KiteAccount

log = logging.getLogger(__name__)


def fingerprint(access_token: str | None) -> str:
    return hashlib.sha256((access_token or "").encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TokenVersion:
    """One stored token: which value (fingerprint) and when it was stored."""

    fingerprint: str
    stored_at: datetime | None

    @classmethod
    def of(cls, account: KiteAccount) -> TokenVersion:
        return cls(fingerprint(account.secret("access_token")), account.token_updated_at)


class TokenHealth:
    def __init__(self) -> None:
        self._refused: dict[str, TokenVersion] = {}  # account id -> the token version Kite refused
        self.pending: dict[str, str] = {}  # rejections not yet reported: account id -> fingerprint

    def refused(self, account_id: str, access_token: str, stored_at: datetime | None) -> None:
        version = TokenVersion(fingerprint(access_token), stored_at)
        if self._refused.get(account_id) != version:
            self._refused[account_id] = version
            self.pending[account_id] = version.fingerprint

    def forgive(self, account_id: str) -> None:
        """A `tokens` control message named this account: try its token again."""
        self._refused.pop(account_id, None)

    def healthy(self, account: KiteAccount) -> bool:
        if not account.secret("access_token"):
            return False
        refused = self._refused.get(account.account_id)
        if refused is not None:
            if refused == TokenVersion.of(account):
                return False
            del self._refused[account.account_id]  # a new token, or stored again: give it a chance
        return account.token_state != "invalid"

    def state(self, account: KiteAccount) -> str:
        return account.token_state if self.healthy(account) else "invalid"

    def retain(self, account_ids: set[str]) -> None:
        for gone in [a for a in self._refused if a not in account_ids]:
            del self._refused[gone]


async def report_rejection(account_id: str, token_fp: str, *, auto_login: bool, store: AccountStore | None,
                           redis: Redis, names: Names) -> None:
    """Tell Postgres and every replica; each step is tried even if the other fails."""
    if store is not None:
        try:
            if await store.get(account_id) is not None:
                await store.set_token_state(account_id, "invalid")
        except Exception as exc:  # a database hiccup must not stop the announcement
            log.warning("could not mark the token invalid", extra={"account_id": account_id,
                                                                   "error": type(exc).__name__})
    if auto_login:
        log.warning("access token refused by Kite; a token refresh is asked for",
                    extra={"account_id": account_id, "token": token_fp})
    else:
        log.warning("access token refused by Kite; the account has no automated login", extra={
            "account_id": account_id, "token": token_fp,
            "action": f"store a new token with `ticker accounts set-token {account_id}` or log in "
                      "through Kite's redirect (/auth/kite/callback)"})
    try:
        await publish_control(redis, names, ControlMessage(kind="tokens", account_id=account_id,
                                                           reason=TOKEN_REFUSED_REASON))
    except (RedisError, OSError) as exc:
        log.warning("could not announce the refused token", extra={"error": type(exc).__name__})


@dataclass
class _Asking:
    """Refresh asks for one token version of one account."""

    version: TokenVersion
    asks: int = 0
    next_at: float = 0.0
    job_id: str | None = None


class RefreshRequests:
    """Asks for token refreshes of held accounts whose token does not work, with back-off."""

    def __init__(self, settings: Settings, queue: ArqRedis, names: Names,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.first = settings.token_refresh_retry_seconds
        self.cap = settings.token_refresh_retry_max_seconds
        self.refused_retry = settings.token_login_refused_retry_seconds
        self.queue, self.names, self.clock = queue, names, clock
        self._asking: dict[str, _Asking] = {}
        self._failing = False

    def job_of(self, account_id: str) -> str | None:
        """The job id of the latest ask for this account (None when none was made)."""
        asking = self._asking.get(account_id)
        return asking.job_id if asking else None

    def delay(self, asks: int) -> float:
        ceiling = min(self.cap, self.first * 2 ** min(max(asks - 1, 0), 30))
        return random.uniform(ceiling / 2, ceiling)

    async def run(self, accounts: Iterable[KiteAccount], tokens: TokenHealth) -> None:
        """Ask for the accounts that need it now. The back-off of an account that works again is
        kept (per token version): a token the ticker refuses but Kite's REST accepts must not turn
        into a refresh loop."""
        now = self.clock()
        seen = set()
        for account in accounts:
            if not account.auto_login or account.login_blocked(self.refused_retry):
                continue
            seen.add(account.account_id)
            if not tokens.healthy(account):
                await self._maybe_ask(account, now)
        for gone in [a for a in self._asking if a not in seen]:
            del self._asking[gone]  # released, removed, refused for good: start afresh next time

    async def _maybe_ask(self, account: KiteAccount, now: float) -> None:
        version = TokenVersion.of(account)
        asking = self._asking.get(account.account_id)
        if asking is None or asking.version != version:
            asking = self._asking[account.account_id] = _Asking(version)
        if now < asking.next_at:
            return
        try:
            if asking.job_id and await unfinished(self.queue, self.names, JOB_REFRESH_TOKENS, asking.job_id):
                asking.next_at = now + self.first  # the last ask is still being worked on
                return
            job_id = derived_job_id(JOB_REFRESH_TOKENS, account.account_id, "ask", time.time_ns())
            await enqueue(self.queue, self.names, JOB_REFRESH_TOKENS, {"account_id": account.account_id},
                          job_id=job_id)
        except (RedisError, OSError) as exc:
            if not self._failing:  # once per outage; the next pass tries again
                log.error("could not ask for a token refresh", extra={"account_id": account.account_id,
                                                                      "error": type(exc).__name__})
            self._failing = True
            return
        self._failing = False
        asking.asks += 1
        asking.job_id = job_id
        asking.next_at = now + self.delay(asking.asks)
        log.info("token refresh asked for", extra={"account_id": account.account_id, "ask": asking.asks,
                                                   "next_in": round(asking.next_at - now, 1)})
