"""Asking for token refreshes of held accounts whose access token does not work.

While an account this replica holds has no working token and has automated login, a token refresh
is asked for: at once, then again after TOKEN_REFRESH_RETRY_SECONDS, doubled per ask with jitter up
to TOKEN_REFRESH_RETRY_MAX_SECONDS, until it works. Every ask is a job of its own, so none is
dropped as a duplicate of an older one, but no ask is made while the previous one is still queued,
waiting to retry or running. An account whose login Kite refused (`login_error`: wrong password,
TOTP or api_secret) is not asked for until its credentials are stored again or
TOKEN_LOGIN_REFUSED_RETRY_SECONDS have passed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from ticker.core.contracts import JOB_REFRESH_TOKENS, Names
from ticker.infra.queue.enqueue import derived_job_id, enqueue, unfinished
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import KiteAccount
from ticker.streamer.control.token_health import TokenHealth, TokenVersion

log = logging.getLogger(__name__)


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

    async def run(self, accounts: Iterable[KiteAccount], token_health: TokenHealth) -> None:
        """Ask for the accounts that need it now. The back-off of an account that works again is
        kept (per token version): a token the ticker refuses but Kite's REST accepts must not turn
        into a refresh loop."""
        now = self.clock()
        seen = set()
        for account in accounts:
            if not account.auto_login or account.login_blocked(self.refused_retry):
                continue
            seen.add(account.account_id)
            if not token_health.healthy(account):
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
