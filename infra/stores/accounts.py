"""Kite accounts: the `kite_accounts` table with every secret encrypted, or the single account
named by settings when the table is empty.

Besides the secrets an account carries the health of its access token (`token_state`, and when the
token was last stored) and, when Kite refused its automated login for good, why (`login_error`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import asyncpg
from pydantic import BaseModel, SecretStr

from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.crypto import SecretBox
from ticker.infra.stores.secrets import FernetBackend, SecretsBackend, secrets_backend

TokenState = Literal["unknown", "valid", "invalid"]
_SECRET_COLUMNS = {
    "api_secret": "api_secret_enc",
    "access_token": "access_token_enc",
    "user_id": "user_id_enc",
    "password": "password_enc",
    "totp_secret": "totp_secret_enc",
}
LOGIN_SECRETS = ("api_secret", "user_id", "password", "totp_secret")  # what an automated login uses


class KiteAccount(BaseModel):
    account_id: str
    api_key: str
    api_secret: SecretStr | None = None
    access_token: SecretStr | None = None
    user_id: SecretStr | None = None
    password: SecretStr | None = None
    totp_secret: SecretStr | None = None
    auto_login: bool = False
    token_state: TokenState = "unknown"
    is_active: bool = True
    token_updated_at: datetime | None = None  # when the access token was last stored (even unchanged)
    login_error: str | None = None  # why Kite refused the automated login for good; None when it works
    login_error_at: datetime | None = None

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    def public(self) -> dict:
        """What may be shown to a user: no secret, only whether each one is set."""
        doc = self.model_dump(include={"account_id", "api_key", "auto_login", "token_state", "is_active"})
        doc.update({f"has_{name}": getattr(self, name) is not None for name in _SECRET_COLUMNS})
        return doc

    def login_blocked(self, retry_seconds: float, now: datetime | None = None) -> bool:
        """Whether Kite refused this account's login for good less than `retry_seconds` ago: its
        credentials are wrong, and trying them again soon only risks Kite locking the account."""
        if self.login_error is None:
            return False
        if self.login_error_at is None:
            return True
        return ((now or datetime.now(UTC)) - self.login_error_at).total_seconds() < retry_seconds


def settings_account(settings: Settings) -> KiteAccount | None:
    if not settings.kite_api_key:
        return None
    return KiteAccount(
        account_id=settings.kite_account_id,
        api_key=settings.kite_api_key,
        api_secret=settings.kite_api_secret,
        access_token=settings.kite_access_token,
        token_state="unknown",
    )


class AccountStore:
    """The `kite_accounts` table; secrets go through a backend (Fernet columns or AWS Secrets Manager)."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox | None, backend: SecretsBackend | None = None) -> None:
        self.pool = pool
        self.box = box
        self.backend = backend or FernetBackend(box)

    @property
    def configured(self) -> bool:
        """Whether secrets can be stored and read (Fernet needs ACCOUNT_ENCRYPTION_KEY)."""
        return not isinstance(self.backend, FernetBackend) or self.backend.box is not None

    async def _from_row(self, row: asyncpg.Record) -> KiteAccount:
        secrets = {name: SecretStr(value) for name, value in (await self.backend.open(row)).items()}
        return KiteAccount(
            account_id=row["account_id"], api_key=row["api_key"], auto_login=row["auto_login"],
            token_state=row["token_state"], is_active=row["is_active"], token_updated_at=row["token_updated_at"],
            login_error=row["login_error"], login_error_at=row["login_error_at"], **secrets,
        )

    async def list(self, *, active_only: bool = True) -> list[KiteAccount]:
        sql = "SELECT * FROM kite_accounts" + (" WHERE is_active" if active_only else "") + " ORDER BY account_id"
        return [await self._from_row(r) for r in await self.pool.fetch(sql)]

    async def get(self, account_id: str) -> KiteAccount | None:
        row = await self.pool.fetchrow("SELECT * FROM kite_accounts WHERE account_id = $1", account_id)
        return await self._from_row(row) if row else None

    async def upsert(self, account: KiteAccount) -> None:
        """Insert or update; secrets not given are kept. A new access token takes the account's
        token_state (a token registered again is tried again, even one refused before), and new
        login credentials clear a recorded login error."""
        enc = await self.backend.seal(account.account_id, {name: account.secret(name) for name in _SECRET_COLUMNS})
        await self.pool.execute(
            """
            INSERT INTO kite_accounts (account_id, api_key, api_secret_enc, access_token_enc, user_id_enc,
                password_enc, totp_secret_enc, auto_login, token_state, is_active, token_updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $11 THEN now() END)
            ON CONFLICT (account_id) DO UPDATE SET
                api_key = EXCLUDED.api_key,
                api_secret_enc = COALESCE(EXCLUDED.api_secret_enc, kite_accounts.api_secret_enc),
                access_token_enc = COALESCE(EXCLUDED.access_token_enc, kite_accounts.access_token_enc),
                user_id_enc = COALESCE(EXCLUDED.user_id_enc, kite_accounts.user_id_enc),
                password_enc = COALESCE(EXCLUDED.password_enc, kite_accounts.password_enc),
                totp_secret_enc = COALESCE(EXCLUDED.totp_secret_enc, kite_accounts.totp_secret_enc),
                token_updated_at = CASE WHEN $11 THEN now() ELSE kite_accounts.token_updated_at END,
                token_state = CASE WHEN $11 THEN EXCLUDED.token_state ELSE kite_accounts.token_state END,
                login_error = CASE WHEN $12 THEN NULL ELSE kite_accounts.login_error END,
                login_error_at = CASE WHEN $12 THEN NULL ELSE kite_accounts.login_error_at END,
                auto_login = EXCLUDED.auto_login, is_active = EXCLUDED.is_active, updated_at = now()
            """,
            account.account_id, account.api_key, enc["api_secret_enc"], enc["access_token_enc"],
            enc["user_id_enc"], enc["password_enc"], enc["totp_secret_enc"], account.auto_login,
            account.token_state, account.is_active, account.access_token is not None,
            any(getattr(account, name) is not None for name in LOGIN_SECRETS),
        )

    async def set_token(self, account_id: str, access_token: str, state: TokenState = "valid") -> None:
        enc = await self.backend.seal(account_id, {"access_token": access_token})
        await self.pool.execute(
            "UPDATE kite_accounts SET access_token_enc = $2, token_state = $3, token_updated_at = $4,"
            " updated_at = now() WHERE account_id = $1",
            account_id, enc["access_token_enc"], state, datetime.now(UTC),
        )

    async def set_token_state(self, account_id: str, state: TokenState) -> None:
        await self.pool.execute(
            "UPDATE kite_accounts SET token_state = $2, updated_at = now() WHERE account_id = $1", account_id, state
        )

    async def set_login_error(self, account_id: str, error: str | None) -> None:
        """Record why Kite refused the automated login (None: it worked, forget the last refusal)."""
        await self.pool.execute(
            "UPDATE kite_accounts SET login_error = $2, login_error_at = CASE WHEN $2::text IS NULL THEN NULL"
            " ELSE now() END, updated_at = now() WHERE account_id = $1", account_id, error)

    async def remove(self, account_id: str) -> bool:
        removed = (await self.pool.execute("DELETE FROM kite_accounts WHERE account_id = $1", account_id)) != "DELETE 0"
        if removed:
            await self.backend.forget(account_id)
        return removed


async def load_accounts(store: AccountStore | None, settings: Settings) -> list[KiteAccount]:
    """Active accounts from Postgres; the settings account when the table has none."""
    accounts = await store.list() if store is not None else []
    if accounts:
        return accounts
    single = settings_account(settings)
    return [single] if single else []


def secret_box(settings: Settings) -> SecretBox | None:
    key = settings.account_encryption_key
    return SecretBox(key.get_secret_value()) if key is not None else None


def account_store(pool: asyncpg.Pool, settings: Settings) -> AccountStore:
    """The store with the secrets backend SECRETS_BACKEND selects."""
    return AccountStore(pool, secret_box(settings), secrets_backend(settings))
