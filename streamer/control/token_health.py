"""Access-token health per account, and what happens when Kite refuses one (a refresh is asked
for by token_refresh.py).

A 403 on the ticker handshake marks that token bad (by its fingerprint and when it was stored,
never the token itself), so the account drops out of the plan and its instruments fail over. The
rejection is reported: token_state 'invalid' in Postgres (when the account lives there) and a
`tokens` control message so every replica re-plans. The account comes back when it carries a
different token, when its token is stored again (even the same value), or when a `tokens` control
message names it with anything but a problem report.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.core.contracts import TOKEN_REFUSED_REASON, ControlMessage, Names
from ticker.infra.queue.control import publish_control
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
