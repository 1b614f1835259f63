"""Access-token health per account, and what happens when Kite refuses one.

A 403 on the ticker handshake marks that exact token bad (by fingerprint, never the token itself),
so the account drops out of the plan and its instruments fail over. The rejection is then
reported: token_state 'invalid' in Postgres (when the account lives there), the token-refresh job
enqueued under an id derived from the refused token (one job per bad token, however many sockets
saw it), and a `tokens` control message so every replica re-plans. The account comes back when it
carries a different token, or when a `tokens` control message names it (someone fixed it).
"""

from __future__ import annotations

import hashlib
import logging

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import JOB_REFRESH_TOKENS, ControlMessage, Names
from ticker.infra.accounts import AccountStore, KiteAccount
from ticker.infra.control import publish_control
from ticker.infra.queue import derived_job_id, enqueue

log = logging.getLogger(__name__)
REFUSED_REASON = "access token refused by the Kite ticker"  # our own announcement; not a fix


def fingerprint(access_token: str | None) -> str:
    return hashlib.sha256((access_token or "").encode()).hexdigest()[:16]


class TokenHealth:
    def __init__(self) -> None:
        self._refused: dict[str, str] = {}  # account id -> fingerprint of the refused token
        self.pending: dict[str, str] = {}  # rejections not yet reported

    def refused(self, account_id: str, access_token: str) -> None:
        fp = fingerprint(access_token)
        if self._refused.get(account_id) != fp:
            self._refused[account_id] = fp
            self.pending[account_id] = fp

    def forgive(self, account_id: str) -> None:
        """A `tokens` control message named this account: try its token again."""
        self._refused.pop(account_id, None)

    def healthy(self, account: KiteAccount) -> bool:
        token = account.secret("access_token")
        if not token:
            return False
        refused = self._refused.get(account.account_id)
        if refused is not None:
            if refused == fingerprint(token):
                return False
            del self._refused[account.account_id]  # a new token: give it a chance
        return account.token_state != "invalid"

    def state(self, account: KiteAccount) -> str:
        return account.token_state if self.healthy(account) else "invalid"

    def retain(self, account_ids: set[str]) -> None:
        for gone in [a for a in self._refused if a not in account_ids]:
            del self._refused[gone]


async def report_rejection(account_id: str, token_fp: str, *, store: AccountStore | None, queue: ArqRedis,
                           redis: Redis, names: Names) -> None:
    """Tell Postgres, the job queue and every replica; each step is tried even if another fails."""
    if store is not None:
        try:
            if await store.get(account_id) is not None:
                await store.set_token_state(account_id, "invalid")
        except Exception as exc:  # a database hiccup must not stop the job being queued
            log.warning("could not mark the token invalid", extra={"account_id": account_id,
                                                                   "error": type(exc).__name__})
    try:
        fresh = await enqueue(queue, names, JOB_REFRESH_TOKENS, {"account_id": account_id},
                              job_id=derived_job_id(JOB_REFRESH_TOKENS, account_id, token_fp))
        log.warning("access token refused by Kite; token refresh requested",
                    extra={"account_id": account_id, "enqueued": fresh})
    except (RedisError, OSError) as exc:
        log.error("could not enqueue the token refresh", extra={"account_id": account_id,
                                                                "error": type(exc).__name__})
    try:
        await publish_control(redis, names, ControlMessage(kind="tokens", account_id=account_id,
                                                           reason=REFUSED_REASON))
    except (RedisError, OSError) as exc:
        log.warning("could not announce the refused token", extra={"error": type(exc).__name__})
